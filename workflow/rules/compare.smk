# Through `python -m attnbench` like the GPU jobs, so that the comparisons run in one warm worker
# instead of paying for a Python with numpy and scipy per shape (docs/scale.md).
rule compare:
    input:
        bench=jobs.output("benchmark"),
    output:
        jobs.output("compare"),
    log:
        "results/logs/compare/{name}.log",
    localrule: True
    conda:
        "../envs/attnbench.yaml"
    params:
        attnbench=ATTNBENCH,
        spec=lambda wildcards: jobs.spec("compare", RUN, wildcards.name),
        schemas=str(SCHEMAS),
    message:
        "Compare {wildcards.name}'s candidates with the reference"
    shell:
        job_shell("compare", env=False)
