# CUDA jobs run through `python -m attnbench` under `env`, so the lock's start-up variables
# (CUBLAS_WORKSPACE_CONFIG, PYTHONHASHSEED) exist before the process starts. Each job's spec is built
# by attnbench.jobs; its schemas are found in SCHEMAS, relative to the working directory.


rule env_fingerprint:
    output:
        jobs.output("fingerprint"),
    log:
        "results/logs/env_fingerprint.log",
    conda:
        "../envs/attnbench.yaml"
    resources:
        gpu=1,
    params:
        attnbench=ATTNBENCH,
        spec=lambda wildcards: jobs.spec("fingerprint", RUN),
        schemas=str(SCHEMAS),
        env=JOB_ENV,
        # not in the spec, and not in any benchmark's: a new commit reruns this job alone (and the report)
        git=GIT_STATE,
    message:
        "Record the environment (results/env/fingerprint.json)"
    shell:
        job_shell("fingerprint")


rule calibrate:
    output:
        CEILINGS,
    log:
        "results/logs/calibrate.log",
    conda:
        "../envs/attnbench.yaml"
    resources:
        gpu=1,
    params:
        attnbench=ATTNBENCH,
        spec=lambda wildcards: jobs.spec("calibrate", RUN),
        schemas=str(SCHEMAS),
        env=JOB_ENV,
    message:
        "Measure the device's ceilings (matmul, copy, read and write bandwidth), or reuse those measured here within a week"
    shell:
        job_shell("calibrate")
