"""Data: synthesize (or download) the raw Taskonomy layout, then prepare memory-mapped arrays per split.

Argument strings are params *functions*: Snakemake formats a plain string param as a wildcard pattern, so a
URL template's {building} or a path with braces would be rewritten or fail.
"""

if config["dataset"]["source"] == "synthetic":

    rule synthesize:
        output:
            directory(RAW),
        log:
            "logs/synthesize/{dataset}.log",
        conda:
            "../../envs/analysis.yaml"
        params:
            args=lambda wildcards: commands.synthesize(config),
        shell:
            "python -m mtlrobust synthesize --out {output:q} {params.args} > {log:q} 2>&1"

elif config["dataset"]["taskonomy"]["root"] is None:

    rule download:
        # A target without wildcards (`snakemake --cores 1 download` on a login node): the raw folder.
        input:
            RAW.format(dataset=DATASET),

    rule download_archives:
        input:
            licence_agreed,
        output:
            directory(RAW),
        log:
            "logs/download/{dataset}.log",
        conda:
            "../../envs/analysis.yaml"
        params:
            args=lambda wildcards: commands.download(config, TASKS),
        shell:
            "python -m mtlrobust download --dest {output:q} {params.args} > {log:q} 2>&1"


rule prepare:
    input:
        raw=raw_dir(),
        split_csv=split_csv_input,
    output:
        packed_files("{split}", "{dataset}"),
    log:
        "logs/prepare/{dataset}/{split}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        args=lambda wildcards: commands.prepare(config, TASKS),
        out=packed_root,
    shell:
        "python -m mtlrobust prepare --raw {input.raw:q} --out {params.out:q} --split {wildcards.split}"
        " {params.args} > {log:q} 2>&1"
