"""Analysis: each table and figure from the evaluation CSVs of its own cells; one summary of all evaluations."""


rule aggregate:
    input:
        all_eval_csvs(),
    output:
        report(
            "results/vulnerability.csv",
            caption="../report/vulnerability.rst",
            category="Vulnerability",
            labels={"table": "all evaluations"},
        ),
    log:
        "logs/aggregate.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/analysis.py"


rule table:
    input:
        evals=output_evals,
        # proxies (Table 3, recommend) leave out models that do not beat the constant predictor; table_at's
        # unbounded-attack check compares with its error
        models=lambda w: (
            ["results/models.csv"]
            if PLAN.outputs[w.name].spec.get("layout")
            in ("correlations", "recommend", "adversarial")
            else []
        ),
    output:
        csv=report(
            "results/{name}.csv",
            caption="../report/outputs.rst",
            category="Tables",
            labels={"output": "{name}", "format": "csv"},
        ),
        md="results/{name}.md",
        html=report(
            "results/{name}.html",
            caption="../report/outputs.rst",
            category="Tables",
            labels={"output": "{name}", "format": "table (html)"},
        ),
        cells="results/cells/{name}.csv",
    log:
        "logs/tables/{name}.log",
    wildcard_constraints:
        name="|".join(PLAN.tables()) or "-",
    conda:
        "../../envs/analysis.yaml"
    params:
        spec=output_spec,
        fragile=PLAN.config["analysis"]["fragile_share"],
    script:
        "../scripts/analysis.py"


rule claims:
    input:
        cells=expand("results/cells/{name}.csv", name=PLAN.claims_sources()),
        theory=["results/theory.csv"] if PLAN.theory else [],
    output:
        csv=report(
            "results/claims.csv",
            caption="../report/claims.rst",
            category="Claims",
            labels={"output": "claims", "format": "csv"},
        ),
        md="results/claims.md",
        html=report(
            "results/claims.html",
            caption="../report/claims.rst",
            category="Claims",
            labels={"output": "claims", "format": "table (html)"},
        ),
    log:
        "logs/claims.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        thresholds=PLAN.config["claims"],
        source=PLAN.config["dataset"]["source"],
    script:
        "../scripts/analysis.py"


rule figure:
    input:
        output_evals,
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
        name="|".join(PLAN.figures()) or "-",
    conda:
        "../../envs/analysis.yaml"
    params:
        spec=output_spec,
    script:
        "../scripts/analysis.py"


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
        args=commands.theory(config, PLAN.theory),
        data=data_split_dir,
    shell:
        "${{MTLROBUST_LAUNCHER:-}} python -m mtlrobust theory --checkpoint {input.ckpt:q} --data {params.data:q} {params.args}"
        " --out {output:q} > {log:q} 2>&1"
