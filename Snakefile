"""mtlrobust: adversarial robustness of multi-task models (AAAI 2022 "Promises and Illusions") as a workflow.

Run the default study (embedded synthetic data) with `snakemake --cores 2`; other studies with
`snakemake --cores N --configfile studies/paper.yaml`.
"""

# A study given with --configfile replaces the default study (keys it omits take the schema's defaults).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/attack.smk"
include: "workflow/rules/analysis.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
