#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests (multi-document YAML) offline.

Core kinds are checked by kubernetes-validate (PyPI) against the bundled
OpenAPI schemas of the given Kubernetes version, in strict mode (unknown
fields are errors). prometheus-operator kinds (ServiceMonitor,
PrometheusRule) are CRDs that kubernetes-validate has no schema for; they
are checked against the pydantic models generated from the operator's CRDs
(cloudcoil-models-prometheus-operator), and a round trip through the model
must give back the input unchanged, so unknown or misspelt fields fail too.

Run by agent/tests/deploy.rs with the virtualenv `cargo xtask test` makes
(`cargo xtask deploy-tools` alone). Usage:

    validate.py --kubernetes-version 1.29.0 [--kubernetes-version 1.37.0 ...]
                [--json OUT] FILE...

With --json, every document is also written to OUT as one JSON array (the
Rust test checks the structure from there). Exit 1 when any document is
invalid, with one line per problem.
"""

import argparse
import json
import sys

import kubernetes_validate
import yaml
from cloudcoil.models.prometheus_operator import v1 as promv1
from kubernetes_validate.utils import VersionNotSupportedError

PROMETHEUS_OPERATOR = "monitoring.coreos.com/v1"
CRD_MODELS = {
    "ServiceMonitor": promv1.ServiceMonitor,
    "PrometheusRule": promv1.PrometheusRule,
    "PodMonitor": promv1.PodMonitor,
}


def strip_none(value):
    """Drops keys whose value is None (the model's unset optionals)."""
    if isinstance(value, dict):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value]
    return value


def check_crd(doc):
    model = CRD_MODELS.get(doc.get("kind"))
    if model is None:
        return [f"no schema for {doc.get('apiVersion')} {doc.get('kind')}"]
    try:
        parsed = model.model_validate(doc)
    except Exception as e:  # pydantic.ValidationError, with every field
        return [str(e).replace("\n", "; ")]
    back = strip_none(parsed.model_dump(by_alias=True, exclude_unset=True, mode="json"))
    if back != doc:
        return [
            "fields the CRD does not define (dropped by the model): "
            + json.dumps(diff(doc, back))
        ]
    return []


def diff(a, b, path=""):
    """Paths present in `a` but not (or different) in `b`."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k, v in a.items():
            if k not in b:
                out.append(f"{path}/{k}")
            else:
                out.extend(diff(v, b[k], f"{path}/{k}"))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(diff(x, y, f"{path}/{i}"))
    elif a != b:
        out.append(path or "/")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubernetes-version", action="append", required=True)
    ap.add_argument("--json")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    docs, problems = [], []
    for name in args.files:
        with open(name, encoding="utf-8") as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc is None:
                    continue
                docs.append(doc)
                what = f"{name}: document {i} ({doc.get('kind')} {doc.get('metadata', {}).get('name')})"
                if doc.get("apiVersion") == PROMETHEUS_OPERATOR:
                    for e in check_crd(doc):
                        problems.append(f"{what}: {e}")
                    continue
                for version in args.kubernetes_version:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                        errs = []
                    except kubernetes_validate.ValidationError as e:
                        errs = [f"{'.'.join(str(p) for p in e.path)}: {e.message}"]
                    except kubernetes_validate.SchemaNotFoundError as e:
                        errs = [f"no schema: {e}"]
                    except kubernetes_validate.InvalidSchemaError as e:
                        errs = [f"invalid schema: {e}"]
                    except VersionNotSupportedError as e:
                        errs = [f"not supported by kubernetes-validate: {e}"]
                    for e in errs:
                        problems.append(f"{what}: Kubernetes {version}: {e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(docs, f)
    for p in problems:
        print(f"INVALID {p}")
    versions = ", ".join(args.kubernetes_version)
    print(f"{len(docs)} documents, {len(problems)} problems (Kubernetes {versions})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
