"""Training: one job per model and milestone; a milestone resumes from the model's previous one.

A milestone that a later one resumes from runs as train_resumable: the same job, which also writes the
optimizer, scheduler and RNG state (twice the weights' size with Adam) to a temporary file that Snakemake
deletes once the next milestone exists. Evaluations read only the weights in epoch{E}.pt.
"""


ruleorder: train_resumable > train


rule train:
    input:
        data=packed_files("train") + packed_files("val"),
        resume=previous_checkpoint,
    output:
        ckpt="results/models/{model_id}/epoch{epoch}.pt",
        log="results/models/{model_id}/epoch{epoch}.csv",
    log:
        "logs/train/{model_id}/epoch{epoch}.log",
    # Warm (local) jobs: the benchmark measures the launcher, not the forked job (README "Warm start").
    benchmark:
        "logs/train/{model_id}/epoch{epoch}.benchmark.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: TRAIN["threads"]
    params:
        model=model_args,
        resume=resume_flag,
        keep=keep_resume_flag,
        training=training_args,
        data=data_root_dir,
    shell:
        "${{MTLROBUST_LAUNCHER:-}} python -m mtlrobust train --data {params.data:q} {params.model} --epochs {wildcards.epoch}"
        " {params.resume} {params.keep} {params.training} --threads {threads}"
        " --out {output.ckpt:q} --log {output.log:q} > {log:q} 2>&1"


use rule train as train_resumable with:
    output:
        ckpt="results/models/{model_id}/epoch{epoch}.pt",
        log="results/models/{model_id}/epoch{epoch}.csv",
        resume=temp("results/models/{model_id}/epoch{epoch}.resume.pt"),
    wildcard_constraints:
        model_id=f"(?=(?:{RESUMABLE or '(?!)'})){MODEL_ID}",


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
    params:
        split=models_split(),
    script:
        "../../scripts/check_models.py"
