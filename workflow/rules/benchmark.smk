rule benchmark:
    input:
        ceilings=CEILINGS,
    output:
        jobs.output("benchmark"),
    log:
        "results/logs/bench/{name}.log",
    conda:
        "../envs/attnbench.yaml"
    resources:
        gpu=1,
    params:
        attnbench=ATTNBENCH,
        spec=lambda wildcards: jobs.spec("benchmark", RUN, wildcards.name),
        schemas=str(SCHEMAS),
        env=JOB_ENV,
    message:
        "Benchmark {wildcards.name}: check every candidate against float64, then time them"
    shell:
        job_shell("benchmark")
