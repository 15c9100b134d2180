rule report:
    input:
        bench=expand("results/bench/{name}.json", name=SHAPES),
        compare=expand("results/compare/{name}.json", name=SHAPES),
        fingerprint="results/env/fingerprint.json",
        ceilings=CEILINGS,
        autotune=rules.autotune.output.json,
    output:
        **REPORT_OUTPUTS,
        latency=report(
            "results/report/plots/latency.png",
            caption="../report/latency.rst",
            category="Plots",
        ),
        roofline=report(
            "results/report/plots/roofline.png",
            caption="../report/roofline.rst",
            category="Plots",
        ),
        speedup=report(
            "results/report/plots/speedup.png",
            caption="../report/speedup.rst",
            category="Plots",
        ),
        memory=report(
            "results/report/plots/memory.png",
            caption="../report/memory.rst",
            category="Plots",
        ),
    log:
        "results/logs/report.log",
    localrule: True
    conda:
        "../../envs/attnbench.yaml"
    params:
        schema_dir=str(SCHEMAS),
        title=jobs.report_title(RUN),
    message:
        "Write the report (results/report/report.html)"
    script:
        "../../scripts/report.py"
