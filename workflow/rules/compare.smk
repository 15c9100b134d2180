# Through `python -m attnbench` like the GPU jobs, so that the comparisons run in one warm worker
# instead of paying for a Python with numpy and scipy per shape (docs/scale.md).
rule compare:
    input:
        bench="results/bench/{name}.json",
    output:
        "results/compare/{name}.json",
    log:
        "results/logs/compare/{name}.log",
    localrule: True
    conda:
        "../../envs/attnbench.yaml"
    params:
        spec=lambda wildcards, input: json.dumps(
            {
                "bench": input.bench,
                "bench_schema": schema("bench"),
                "reference": RUN["reference"],
                "stats": RUN.get("stats", {}),
            },
            sort_keys=True,
        ),
        schema=schema("compare"),
    shell:
        "python -m attnbench compare --spec {params.spec:q} --out {output} --schema {params.schema:q} 2> {log}"
