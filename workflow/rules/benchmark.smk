rule benchmark:
    input:
        # Every result is bounded by the measured ceilings (src/attnbench/audit.py).
        ceilings="results/env/ceilings.json",
    output:
        "results/bench/{name}.json",
    log:
        "results/logs/bench/{name}.log",
    conda:
        "../../envs/attnbench.yaml"
    resources:
        gpu=1,
    params:
        spec=lambda wildcards, input: run_config.benchmark_spec(RUN, wildcards.name, input.ceilings),
        env=JOB_ENV,
        schema=schema("bench"),
    shell:
        "{params.env} python -m attnbench benchmark --spec {params.spec:q}"
        " --out {output} --schema {params.schema:q} 2> {log}"
