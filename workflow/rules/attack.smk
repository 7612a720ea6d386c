"""Attacks: one job per (model, milestone, attack), running every attacked subset the study needs.

An evaluation whose steps an output reads (PLAN.traced) runs as evaluate_traced: the same job, which also
writes the state after each attack step next to its CSV (one attack run for every step count).
"""


ruleorder: evaluate_traced > evaluate


rule evaluate:
    input:
        ckpt=CHECKPOINT,
        data=packed_files(EVAL_SPLIT),
    output:
        csv=EVAL,
    # A warm (local) job's benchmark measures its launcher; the forked job's own wall time, CPU time and
    # peak memory go to the .job.tsv log (empty for a cold job, whose benchmark measures it; README
    # "Warm start").
    log:
        out=f"{EVAL_JOB}.log",
        job=f"{EVAL_JOB}.job.tsv",
    benchmark:
        f"{EVAL_JOB}.benchmark.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["evaluation"]["threads"]
    params:
        attack=attack_json,
        attacked=attacked_args,
        evaluation=commands.evaluation(config),
        data=data_split_dir,
        steps=steps_out_flag,
    shell:
        "OMP_NUM_THREADS={threads} MTLROBUST_WARM_STATS={log.job:q} ${{MTLROBUST_LAUNCHER:-}} python -m mtlrobust evaluate --checkpoint {input.ckpt:q}"
        " --data {params.data:q} --attack-json {params.attack:q} {params.attacked} {params.evaluation}"
        " --out {output.csv:q} {params.steps} > {log.out:q} 2>&1"


use rule evaluate as evaluate_traced with:
    output:
        csv=EVAL,
        steps=EVAL_STEPS,
    wildcard_constraints:
        model_id=f"(?=(?:{TRACED or '(?!)'})){MODEL_ID}",
