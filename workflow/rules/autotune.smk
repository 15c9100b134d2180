# The run-wide statistics, once every shape is compared: Holm across all comparisons with the
# reference, and autotune (each shape's fastest correct candidate against the others). The report
# renders what this writes (src/attnbench/autotune.py).
rule autotune:
    input:
        bench=expand("results/bench/{name}.json", name=SHAPES),
        compare=expand("results/compare/{name}.json", name=SHAPES),
    output:
        json="results/report/autotune.json",
        csv="results/report/autotune.csv",
    log:
        "results/logs/autotune.log",
    localrule: True
    conda:
        "../../envs/attnbench.yaml"
    params:
        schema_dir=str(SCHEMAS),
        stats=jobs.stats_settings(RUN),
    message:
        "Rank each shape's candidates (autotune) and correct for multiple comparisons (Holm)"
    script:
        "../../scripts/autotune.py"
