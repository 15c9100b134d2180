# Only with `baseline: PATH` in the config (or --config baseline=PATH): this run against a stored
# baseline, one verdict per (shape, candidate). `attnbench gate results/ratchet/verdict.json` turns
# the verdict into an exit code for CI.
if BASELINE:

    rule ratchet_shape:
        input:
            bench=jobs.output("benchmark"),
            baseline=BASELINE,
        output:
            "results/ratchet/shapes/{name}.json",
        log:
            "results/logs/ratchet/{name}.log",
        localrule: True
        conda:
            "../envs/attnbench.yaml"
        params:
            settings=jobs.ratchet_settings(RUN),
            schema_dir=str(SCHEMAS),
        message:
            "Compare {wildcards.name} with the baseline"
        script:
            "../scripts/ratchet_shape.py"

    rule ratchet:
        input:
            shapes=expand("results/ratchet/shapes/{name}.json", name=SHAPES),
            baseline=BASELINE,
            fingerprint=rules.env_fingerprint.output[0],
        output:
            **RATCHET_OUTPUTS,
        log:
            "results/logs/ratchet.log",
        localrule: True
        conda:
            "../envs/attnbench.yaml"
        params:
            settings=jobs.ratchet_settings(RUN),
            schema_dir=str(SCHEMAS),
        message:
            "Decide the ratchet's verdict against the baseline"
        script:
            "../scripts/ratchet.py"
