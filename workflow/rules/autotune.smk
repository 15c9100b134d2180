# The run-wide statistics, once every shape is compared: every comparison corrected for all the run
# makes, and autotune (each shape's fastest correct candidate against the others). The report
# renders what this writes (src/attnbench/autotune.py). Through `python -m attnbench`, in the warm
# worker like compare (jobs.py says why).
rule autotune:
    input:
        bench=expand(rules.benchmark.output[0], name=SHAPES),
        compare=expand(rules.compare.output[0], name=SHAPES),
    output:
        json=jobs.output("autotune"),
        csv=jobs.AUTOTUNE_CSV,
    log:
        "results/logs/autotune.log",
    localrule: True
    conda:
        "../envs/attnbench.yaml"
    params:
        attnbench=ATTNBENCH,
        spec=jobs.spec("autotune", RUN),
        schemas=str(SCHEMAS),
    message:
        "Rank each shape's candidates (autotune) and correct every comparison for the run's many (Bonferroni)"
    shell:
        job_shell("autotune", out="{output.json}", env=False)
