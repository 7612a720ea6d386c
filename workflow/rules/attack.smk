"""Attacks: one job per (model, milestone, attack), running every attacked subset the study needs."""


rule evaluate:
    input:
        ckpt="results/models/{model_id}/epoch{epoch}.pt",
        data=packed_files(EVAL_SPLIT),
    output:
        "results/evals/{model_id}/epoch{epoch}/{attack}.csv",
    log:
        "logs/evaluate/{model_id}/epoch{epoch}/{attack}.log",
    benchmark:
        "logs/evaluate/{model_id}/epoch{epoch}/{attack}.benchmark.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["evaluation"]["threads"]
    params:
        attack=attack_json,
        attacked=attacked_args,
        evaluation=commands.evaluation(config),
        data=data_split_dir,
    shell:
        "OMP_NUM_THREADS={threads} python -m mtlrobust evaluate --checkpoint {input.ckpt:q}"
        " --data {params.data:q} --attack-json {params.attack:q} {params.attacked} {params.evaluation}"
        " --out {output:q} > {log:q} 2>&1"
