"""Attacks: one job per (model, milestone, attack), running every attacked subset the study needs.

An evaluation whose steps an output reads (PLAN.traced) runs as evaluate_traced: the same job, which also
writes the state after each attack step next to its CSV (one attack run for every step count).
"""


ruleorder: evaluate_traced > evaluate


rule evaluate:
    input:
        ckpt="results/models/{model_id}/epoch{epoch}.pt",
        data=packed_files(EVAL_SPLIT),
    output:
        "results/evals/{model_id}/epoch{epoch}/{attack}.csv",
    log:
        "logs/evaluate/{model_id}/epoch{epoch}/{attack}.log",
    # Warm (local) jobs: the benchmark measures the launcher, not the forked job (README "Warm start").
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
        "OMP_NUM_THREADS={threads} ${{MTLROBUST_LAUNCHER:-}} python -m mtlrobust evaluate --checkpoint {input.ckpt:q}"
        " --data {params.data:q} --attack-json {params.attack:q} {params.attacked} {params.evaluation}"
        " --out {output:q} > {log:q} 2>&1"


rule evaluate_traced:
    input:
        ckpt=traced_checkpoint,
        data=packed_files(EVAL_SPLIT),
    output:
        csv="results/evals/{traced}.csv",
        steps="results/evals/{traced}.steps.csv",
    log:
        "logs/evaluate/{traced}.log",
    # Warm (local) jobs: the benchmark measures the launcher, not the forked job (README "Warm start").
    benchmark:
        "logs/evaluate/{traced}.benchmark.tsv"
    wildcard_constraints:
        traced=TRACED,
    conda:
        "../../envs/torch.yaml"
    threads: config["evaluation"]["threads"]
    params:
        attack=lambda w: PLAN.attack_json(traced_key(w)[2]),
        attacked=lambda w: commands.attacked(PLAN.evals[traced_key(w)]),
        evaluation=commands.evaluation(config),
        data=data_split_dir,
    shell:
        "OMP_NUM_THREADS={threads} ${{MTLROBUST_LAUNCHER:-}} python -m mtlrobust evaluate --checkpoint {input.ckpt:q}"
        " --data {params.data:q} --attack-json {params.attack:q} {params.attacked} {params.evaluation}"
        " --out {output.csv:q} --steps-out {output.steps:q} > {log:q} 2>&1"
