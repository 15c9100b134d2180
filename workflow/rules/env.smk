# CUDA jobs run through `python -m attnbench` under `env`, so the lock's start-up variables
# (CUBLAS_WORKSPACE_CONFIG, PYTHONHASHSEED) exist before the process starts.


rule env_fingerprint:
    output:
        "results/env/fingerprint.json",
    log:
        "results/logs/env_fingerprint.log",
    conda:
        "../../envs/attnbench.yaml"
    resources:
        gpu=1,
    params:
        spec=lambda wildcards: run_config.fingerprint_spec(RUN),
        env=JOB_ENV,
        schema=schema("fingerprint"),
    shell:
        "{params.env} python -m attnbench fingerprint --spec {params.spec:q}"
        " --out {output} --schema {params.schema:q} 2> {log}"


rule calibrate:
    output:
        CEILINGS,
    log:
        "results/logs/calibrate.log",
    conda:
        "../../envs/attnbench.yaml"
    resources:
        gpu=1,
    params:
        spec=lambda wildcards: run_config.calibrate_spec(RUN),
        env=JOB_ENV,
        schema=schema("ceilings"),
    shell:
        "{params.env} python -m attnbench calibrate --spec {params.spec:q}"
        " --out {output} --schema {params.schema:q} 2> {log}"
