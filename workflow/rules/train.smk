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
        model=model_args,
        resume=resume_flag,
        training=training_args,
        data=data_root_dir,
    shell:
        "python -m mtlrobust train --data {params.data:q} {params.model} --epochs {wildcards.epoch}"
        " {params.resume} {params.training} --threads {threads}"
        " --out {output.ckpt:q} --log {output.log:q} > {log:q} 2>&1"


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
