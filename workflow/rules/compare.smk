rule compare:
    input:
        bench="results/bench/{name}.json",
    output:
        "results/compare/{name}.json",
    log:
        "results/logs/compare/{name}.log",
    conda:
        "../../envs/attnbench.yaml"
    params:
        reference=RUN["reference"],
        stats=RUN.get("stats", {}),
        bench_schema=schema("bench"),
        schema=schema("compare"),
    script:
        "../../scripts/compare.py"
