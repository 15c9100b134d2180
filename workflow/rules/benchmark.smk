rule benchmark:
    input:
        ceilings=CEILINGS,
    output:
        "results/bench/{name}.json",
    log:
        "results/logs/bench/{name}.log",
    conda:
        "../../envs/attnbench.yaml"
    resources:
        gpu=1,
    params:
        spec=lambda wildcards: run_config.benchmark_spec(RUN, wildcards.name, CEILINGS),
        env=JOB_ENV,
        schema=schema("bench"),
    shell:
        "{params.env} python -m attnbench benchmark --spec {params.spec:q}"
        " --out {output} --schema {params.schema:q} 2> {log}"
