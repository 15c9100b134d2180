# The run-wide statistics, once every shape is compared: every comparison corrected for all the run
# makes, and autotune (each shape's fastest correct candidate against the others). The report
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
        "Rank each shape's candidates (autotune) and correct every comparison for the run's many (Bonferroni)"
    shell:
        "{params.attnbench} autotune --spec {params.spec:q} --out {output.json} --schemas {params.schemas:q} 2> {log}"
