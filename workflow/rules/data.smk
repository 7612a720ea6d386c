"""Data: synthesize (or download) the raw Taskonomy layout, then prepare memory-mapped arrays per split."""

if config["dataset"]["source"] == "synthetic":

    rule synthesize:
        output:
            directory("resources/{dataset}/raw"),
        log:
            "logs/synthesize/{dataset}.log",
        conda:
            "../../envs/analysis.yaml"
        params:
            synthetic=config["dataset"]["synthetic"],
        shell:
            "python -m mtlrobust synthesize --out {output} --buildings {params.synthetic[buildings]}"
            " --points {params.synthetic[points]} --views {params.synthetic[views]}"
            " --resolution {params.synthetic[resolution]} --seed {params.synthetic[seed]} > {log} 2>&1"

elif config["dataset"]["taskonomy"]["root"] is None:

    rule download:
        output:
            directory("resources/{dataset}/raw"),
        log:
            "logs/download/{dataset}.log",
        conda:
            "../../envs/analysis.yaml"
        params:
            args=download_args,
        shell:
            "python -m mtlrobust download --dest {output} {params.args} > {log} 2>&1"


rule prepare:
    input:
        raw=raw_dir(),
    output:
        packed_files("{split}", "{dataset}"),
    log:
        "logs/prepare/{dataset}/{split}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        args=prepare_args,
        out=packed_root,
    shell:
        "python -m mtlrobust prepare --raw {input.raw} --out {params.out} --split {wildcards.split}"
        " {params.args} > {log} 2>&1"
