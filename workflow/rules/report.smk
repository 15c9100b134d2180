# The report: HTML, Markdown, the summary table and the plots, and headline.json, the answer it
# leads with, which the run's end prints (summary.smk). In the warm worker, like autotune.
rule report:
    input:
        bench=rules.autotune.input.bench,
        compare=rules.autotune.input.compare,
        fingerprint=rules.env_fingerprint.output[0],
        ceilings=rules.calibrate.output[0],
        autotune=rules.autotune.output.json,
    output:
        headline=jobs.output("report"),
        html=REPORT_OUTPUTS["html"],
        md=REPORT_OUTPUTS["md"],
        csv=REPORT_OUTPUTS["csv"],
        latency=report(
            jobs.REPORT_FILES["latency"],
            caption="../report/latency.rst",
            category="Plots",
        ),
        roofline=report(
            jobs.REPORT_FILES["roofline"],
            caption="../report/roofline.rst",
            category="Plots",
        ),
        speedup=report(
            jobs.REPORT_FILES["speedup"],
            caption="../report/speedup.rst",
            category="Plots",
        ),
        memory=report(
            jobs.REPORT_FILES["memory"],
            caption="../report/memory.rst",
            category="Plots",
        ),
        accuracy=report(
            jobs.REPORT_FILES["accuracy"],
            caption="../report/accuracy.rst",
            category="Plots",
        ),
    log:
        "results/logs/report.log",
    localrule: True
    conda:
        "../envs/attnbench.yaml"
    params:
        attnbench=ATTNBENCH,
        spec=jobs.spec("report", RUN),
        schemas=str(SCHEMAS),
    message:
        "Write the report (results/report/report.html)"
    shell:
        job_shell("report", out="{output.headline}", env=False)
