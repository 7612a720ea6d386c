"""Analysis: one tidy vulnerability table, then every table and figure from it."""


rule aggregate:
    input:
        eval_csvs(),
    output:
        index="results/evals/index.txt",
        table=report(
            "results/vulnerability.csv",
            caption="../report/vulnerability.rst",
            category="Vulnerability",
            labels={"table": "all evaluations"},
        ),
    log:
        "logs/aggregate.log",
    conda:
        "../../envs/analysis.yaml"
    shell:
        "printf '%s\\n' {input} > {output.index}"
        " && python -m mtlrobust aggregate --inputs-from {output.index} --out {output.table} > {log} 2>&1"


rule table:
    input:
        "results/vulnerability.csv",
    output:
        csv=report(
            "results/{name}.csv",
            caption="../report/outputs.rst",
            category="Tables",
            labels={"output": "{name}", "format": "csv"},
        ),
        md="results/{name}.md",
    log:
        "logs/tables/{name}.log",
    wildcard_constraints:
        name="|".join(TABLES) or "-",
    conda:
        "../../envs/analysis.yaml"
    params:
        spec=spec_json,
    shell:
        "python -m mtlrobust tables --vulnerability {input} --table {wildcards.name}"
        " --spec-json {params.spec:q} --out {output.csv} > {log} 2>&1"


rule figure:
    input:
        "results/vulnerability.csv",
    output:
        png=report(
            "results/{name}.png",
            caption="../report/outputs.rst",
            category="Figures",
            labels={"output": "{name}", "format": "png"},
        ),
        pdf="results/{name}.pdf",
    log:
        "logs/figures/{name}.log",
    wildcard_constraints:
        name="|".join(FIGURE_OUTPUTS) or "-",
    conda:
        "../../envs/analysis.yaml"
    params:
        spec=spec_json,
    shell:
        "python -m mtlrobust figures --vulnerability {input} --figure {wildcards.name}"
        " --spec-json {params.spec:q} --out {output.png} > {log} 2>&1"


rule theory:
    input:
        ckpt=theory_checkpoint(),
        data=packed_files(EVAL_SPLIT),
    output:
        report(
            "results/theory.csv",
            caption="../report/theory.rst",
            category="Theory",
            labels={"output": "theory"},
        ),
    log:
        "logs/theory.log",
    conda:
        "../../envs/torch.yaml"
    params:
        attack=theory_attack(),
        orders=" ".join(STUDY["figure1"]["orders"]),
        device=config["evaluation"]["device"],
        limit=limit_flag(),
        data=data_split_dir,
    shell:
        "python -m mtlrobust theory --checkpoint {input.ckpt} --data {params.data}"
        " --norm {params.attack[norm]} --eps {params.attack[eps]} --orders {params.orders}"
        " {params.limit} --device {params.device} --out {output} > {log} 2>&1"
