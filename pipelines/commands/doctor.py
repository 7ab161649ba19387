"""``interest doctor``: what a cluster run needs, checked against the cluster before the first submit.

    interest doctor --image REGISTRY/interest-pipeline:TAG --pipeline-root s3://... --registry s3://... \
        --namespace NS [--service-account default-editor] [--context CONTEXT] [--no-kubernetes]

Exit 0 when every check passes, 1 otherwise (pipelines.preflight lists them).
"""

from __future__ import annotations

import argparse

from pipelines import preflight


def register(subparsers: argparse._SubParsersAction) -> None:
    doctor = subparsers.add_parser(
        "doctor", help="check a cluster before the first submit (image, Kubernetes, RBAC, artifact store)",
        description="Check that the image is in its registry, the Kubernetes API serves PyTorchJobs and "
        "Tensorboards and lets the service account create them, and the artifact store enforces conditional "
        "writes. S3 stores are reached through AWS_ENDPOINT_URL and the AWS credentials of this environment.")
    doctor.add_argument("--image", required=True, help="the image the run's tasks pull (REGISTRY/REPO:TAG)")
    doctor.add_argument("--pipeline-root", required=True, help="the run's pipeline root (gs://, s3://, minio://)")
    doctor.add_argument("--registry", default=None, help="the model registry root, when it is another store")
    doctor.add_argument("--namespace", default="kubeflow", help="the namespace the run's pods run in")
    doctor.add_argument("--service-account", default=None,
                        help="check as this service account (impersonated), e.g. default-editor; default: as you")
    doctor.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    doctor.add_argument("--no-kubernetes", action="store_true", help="skip the Kubernetes checks (Vertex AI)")
    doctor.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    checks = [preflight.image_check(args.image)]
    if not args.no_kubernetes:
        client = preflight.kubernetes_client(args.service_account, args.namespace, args.context)
        checks += preflight.kubernetes_checks(client, args.namespace)
    checks += preflight.store_checks({"--pipeline-root": args.pipeline_root, "--registry": args.registry or ""})
    print(preflight.format_report(checks))
    return 0 if all(check.ok for check in checks) else 1
