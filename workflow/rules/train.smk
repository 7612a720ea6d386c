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
        ckpt=CHECKPOINT,
        log=TRAIN_LOG,
    # A warm (local) job's benchmark measures its launcher; the forked job's own wall time, CPU time and
    # peak memory go to the .job.tsv log (empty for a cold job, whose benchmark measures it; README
    # "Warm start").
    log:
        out=f"{TRAIN_JOB}.log",
        job=f"{TRAIN_JOB}.job.tsv",
    benchmark:
        f"{TRAIN_JOB}.benchmark.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: TRAIN["threads"]
    resources:
        runtime=train_runtime,  # SLURM only: longer for adversarial training (common.smk)
    params:
        model=model_args,
        resume=resume_flag,
        keep=keep_resume_flag,
        training=training_args,
        data=data_root_dir,
    shell:
        "MTLROBUST_WARM_STATS={log.job:q} ${{MTLROBUST_LAUNCHER:-}} python -m mtlrobust train --data {params.data:q} {params.model} --epochs {wildcards.epoch}"
        " {params.resume} {params.keep} {params.training} --threads {threads}"
        " --out {output.ckpt:q} --log {output.log:q} > {log.out:q} 2>&1"


use rule train as train_resumable with:
    output:
        ckpt=CHECKPOINT,
        log=TRAIN_LOG,
        resume=temp(RESUME),
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
        "../scripts/check_models.py"
