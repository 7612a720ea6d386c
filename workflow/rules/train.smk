"""Training: one job per model and milestone; a milestone resumes from the model's previous one."""


rule train:
    input:
        data=packed_files("train") + packed_files("val"),
        resume=previous_checkpoint,
    output:
        ckpt="results/models/{model_id}/epoch{epoch}.pt",
        log="results/models/{model_id}/epoch{epoch}.csv",
    log:
        "logs/train/{model_id}/epoch{epoch}.log",
    benchmark:
        "logs/train/{model_id}/epoch{epoch}.benchmark.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: TRAIN["threads"]
    params:
        model=model_params,
        resume=resume_flag,
        training=training_params(),
        flags=train_flags(),
        data=data_root_dir,
    shell:
        "python -m mtlrobust train --data {params.data} --arch {params.model[arch]}"
        " --tasks {params.model[tasks]} --weighting {params.model[weighting]} --main {params.model[main]}"
        " --seed {params.model[seed]} --epochs {wildcards.epoch} {params.resume}"
        " --batch-size {params.training[batch_size]} --lr {params.training[lr]}"
        " --lr-milestones={params.training[lr_milestones]} --lr-gamma {params.training[lr_gamma]}"
        " {params.flags} --device {params.training[device]} --threads {threads}"
        " --out {output.ckpt} --log {output.log} > {log} 2>&1"


rule check_models:
    input:
        final_logs(),
    output:
        report(
            "results/models.csv",
            caption="../report/models.rst",
            category="Models",
            labels={"table": "training summary"},
        ),
    log:
        "logs/check_models.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/check_models.py"
