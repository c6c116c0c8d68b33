#!/usr/bin/env python3
"""A Prometheus Operator CRD's schema as a strict JSON Schema, for the offline check of the
manifests (tests/integration/tests/stack/files.rs; README.md beside this file).

    trim-crd.py monitoring.coreos.com_podmonitors.yaml > podmonitor-monitoring-v1.json

From the CRD's served v1 openAPIV3Schema: descriptions, x-kubernetes-* markers and `status` are
dropped; apiVersion and kind are pinned to the CRD's; metadata must have a name; and every object
that lists its properties gets `additionalProperties: false`. The API server would prune an unknown
field silently, so a misspelt one would be lost without a word: here it is an error, as with
`kubernetes-validate --strict`.
"""

import json
import sys

import yaml


def strip(s):
    if isinstance(s, dict):
        out = {
            k: strip(v)
            for k, v in s.items()
            if k != "description" and not k.startswith("x-kubernetes-")
        }
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(s, list):
        return [strip(v) for v in s]
    return s


def main(path):
    crd = yaml.safe_load(open(path))
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v["served"]]
    schema = strip(version["schema"]["openAPIV3Schema"])
    schema["properties"].pop("status", None)
    schema["properties"]["apiVersion"] = {"const": f"{group}/v1"}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    annotations = crd["metadata"].get("annotations", {})
    out = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": "%s %s/v1 from the Prometheus Operator %s CRD (controller-gen %s), trimmed by trim-crd.py"
        % (kind, group, annotations.get("operator.prometheus.io/version", "?"),
           annotations.get("controller-gen.kubebuilder.io/version", "?")),
        **schema,
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
