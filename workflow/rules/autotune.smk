# The run-wide statistics, once every shape is compared: Holm across all comparisons with the
# reference, and autotune (each shape's fastest correct candidate against the others). The report
# renders what this writes (src/attnbench/autotune.py). Through `python -m attnbench`, in the warm
# worker like compare (jobs.py says why).
rule autotune:
    input:
        bench=expand("results/bench/{name}.json", name=SHAPES),
        compare=expand("results/compare/{name}.json", name=SHAPES),
    output:
        json=jobs.output("autotune"),
        csv=jobs.AUTOTUNE_CSV,
    log:
        "results/logs/autotune.log",
    localrule: True
    conda:
        "../../envs/attnbench.yaml"
    params:
        attnbench=ATTNBENCH,
        spec=jobs.spec("autotune", RUN),
        schemas=str(SCHEMAS),
    message:
        "Rank each shape's candidates (autotune) and correct for multiple comparisons (Holm)"
    shell:
        "{params.attnbench} autotune --spec {params.spec:q} --out {output.json} --schemas {params.schemas:q} 2> {log}"
