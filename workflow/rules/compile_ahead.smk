# Only where a candidate compiles on its first call (flex, user kernels) and the config does not say
# `compile_ahead: false`: every shape's first calls, in parallel processes, before any benchmark job
# (the priority), so that each job's compile hits the disk caches (src/attnbench/ahead.py). No
# benchmark job depends on it, and its spec is not compared: editing a shape never reruns it.
if COMPILE_AHEAD_OUTPUTS:

    rule compile_ahead:
        output:
            COMPILE_AHEAD_OUTPUTS,
        log:
            "results/logs/compile_ahead.log",
        priority: 10
        conda:
            "../../envs/attnbench.yaml"
        resources:
            gpu=1,
        params:
            attnbench=ATTNBENCH,
            spec=jobs.Uncompared(jobs.spec("compile_ahead", RUN)),
            schemas=str(SCHEMAS),
            env=JOB_ENV,
        message:
            "Compile ahead: every shape's compiling candidates called once, in parallel processes"
        shell:
            "{params.env} {params.attnbench} compile_ahead --spec {params.spec:q}"
            " --out {output} --schemas {params.schemas:q} 2> {log}"
