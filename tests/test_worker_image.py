"""The worker image (Dockerfile, .dockerignore) and the Kubernetes work-pool templates
(infra/scale-out/k8s): static checks, no Docker, no cluster, no network.

The templates are rendered with Prefect's own code (the installed Prefect's
`BaseJobConfiguration.from_template_and_values`, which the worker runs for every flow run) and
checked with the validation the Prefect server applies to `prefect work-pool create`. What
prefect-kubernetes adds on top (it is not installed here) is checked by hand: the manifest keys it
insists on, and its conversion of the configuration's `env` into the container's env list.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "infra" / "scale-out" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
KINDS = ("cpu", "gpu")

# What the flow-run pods read from the credentials Secret, and what they get as plain env.
SECRET_KEYS = {
    "PREFECT_API_AUTH_STRING",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "TRICKFLOW_REGISTRY_KEY",
}
PLAIN_ENV = {"MLFLOW_TRACKING_URI", "TRICKFLOW_HOME"}
# What the image holds of the repository: the package (components, flows), the files its code
# reads beside it (schemas/, uv.lock), and what building the package needs.
IMAGE_SOURCES = {"pyproject.toml", "uv.lock", "README.md", "schemas", "components", "flows"}
APP = "/opt/trickflow"


# ---- templates -------------------------------------------------------------------------------


def template(kind: str) -> dict[str, Any]:
    return json.loads((K8S / f"{kind}-pool.json").read_text())


def defaults(kind: str) -> dict[str, Any]:
    return {
        name: spec["default"]
        for name, spec in template(kind)["variables"]["properties"].items()
        if "default" in spec
    }


class _NoClient:
    """Stands in for the Prefect client: rendering these templates must not need the API."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the template needed the Prefect API ({name})")


def render(kind: str, job_variables: dict[str, Any] | None = None):
    """The job configuration a worker of this pool builds for a deployment's job variables."""
    from prefect.workers.base import BaseJobConfiguration

    class KubernetesJob(BaseJobConfiguration):
        # the fields of prefect-kubernetes' KubernetesWorkerJobConfiguration
        namespace: str = "default"
        job_manifest: dict[str, Any]
        cluster_config: dict[str, Any] | None = None
        job_watch_timeout_seconds: int | None = None
        pod_watch_timeout_seconds: int = 60
        stream_output: bool = True

    return asyncio.run(
        KubernetesJob.from_template_and_values(
            template(kind), job_variables or {}, client=_NoClient()
        )
    )


def pod(job) -> dict[str, Any]:
    return job.job_manifest["spec"]["template"]["spec"]


def container(job) -> dict[str, Any]:
    return pod(job)["containers"][0]


def shared_mount(job) -> tuple[str, str]:
    """(claim name, mount path) of the pod's persistent volume claim."""
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in pod(job).get("volumes", [])
        if "persistentVolumeClaim" in volume
    }
    assert len(claims) == 1, f"one shared-storage claim per pod, found {claims}"
    ((volume, claim),) = claims.items()
    mounts = [m["mountPath"] for m in container(job).get("volumeMounts", []) if m["name"] == volume]
    assert len(mounts) == 1, f"the claim's volume {volume!r} is mounted {len(mounts)} times"
    return claim, mounts[0]


@pytest.mark.parametrize("kind", KINDS)
def test_every_placeholder_is_a_declared_variable_and_every_variable_is_used(kind):
    from prefect.server.schemas.actions import validate_base_job_template
    from prefect.utilities.templating import PlaceholderType, find_placeholders

    base = template(kind)
    validate_base_job_template(base)  # what the server checks on `prefect work-pool create`
    placeholders = find_placeholders(base["job_configuration"])
    assert {p.type for p in placeholders} == {PlaceholderType.STANDARD}
    used = {p.name for p in placeholders}
    declared = set(base["variables"]["properties"])
    assert used - declared == set(), "placeholders without a variable"
    # a variable no placeholder uses would let a deployment set it to no effect
    assert declared - used == set(), "variables no placeholder uses"


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_and_deployment_overrides_pass_the_servers_schema_check(kind):
    from prefect.utilities.schema_tools import ValidationError, validate

    schema = template(kind)["variables"]

    def check(values):
        # as the server validates pool defaults and a deployment's job_variables
        validate(
            values,
            schema,
            raise_on_error=True,
            preprocess=True,
            ignore_required=True,
            allow_none_with_default=True,
        )

    check(defaults(kind))
    check(
        {
            "image": "registry.example.com/trickflow:abc123",
            "env": {"TF_CPP_MIN_LOG_LEVEL": "1"},
            "node_selector": {"cloud.example.com/pool": "big"},
            "image_pull_secrets": [{"name": "registry"}],
            "memory_limit": "48Gi",
        }
    )
    with pytest.raises(ValidationError):
        check({"image_pull_policy": "Sometimes"})
    if kind == "gpu":
        check({"gpu_count": 8})
        with pytest.raises(ValidationError):
            check({"gpu_count": 0})


def _leaves(tree, path=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from _leaves(value, (*path, index))
    else:
        yield path, tree


def _prefect_kubernetes_default() -> dict[str, Any]:
    """prefect-kubernetes' default base job template, as the installed Prefect ships it (the
    worker-type catalog that `prefect work-pool create --type kubernetes` uses)."""
    import prefect

    catalog = (
        Path(prefect.__file__).parent
        / "server/api/collections_data/views/aggregate-worker-metadata.json"
    )
    if not catalog.exists():
        pytest.skip("this Prefect ships no worker catalog")
    workers = json.loads(catalog.read_text()).get("prefect-kubernetes", {})
    if "kubernetes" not in workers:
        pytest.skip("this Prefect's worker catalog has no kubernetes worker")
    return workers["kubernetes"]["default_base_job_configuration"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_pools_extend_prefect_kubernetes_default_template(kind):
    """Every variable of the default template is kept (same type), and every placeholder of the
    default template is where it was, so that deployments' job_variables work as documented."""
    default, ours = _prefect_kubernetes_default(), template(kind)
    default_vars = default["variables"]["properties"]
    our_vars = ours["variables"]["properties"]
    for name, spec in default_vars.items():
        assert name in our_vars, f"variable {name!r} of the default template is missing"
        assert our_vars[name].get("type") == spec.get("type"), name
        assert our_vars[name].get("enum") == spec.get("enum"), name

    def at(tree, path):
        for key in path:
            tree = tree[key]
        return tree

    for path, value in _leaves(default["job_configuration"]):
        if isinstance(value, str) and "{{" in value:
            assert at(ours["job_configuration"], path) == value, path


@pytest.mark.parametrize("kind", KINDS)
def test_the_rendered_job_is_one_that_prefect_kubernetes_accepts(kind):
    job = render(kind)
    manifest = job.job_manifest
    assert "{{" not in json.dumps(manifest), "a placeholder was left unrendered"
    # the values prefect-kubernetes requires (_get_base_job_manifest; it adds metadata.labels)
    assert (manifest["apiVersion"], manifest["kind"]) == ("batch/v1", "Job")
    spec = pod(job)
    assert (spec["parallelism"], spec["completions"], spec["restartPolicy"]) == (1, 1, "Never")
    assert container(job)["name"] == "prefect-job"
    # Prefect retries; Kubernetes must not start a second pod for the same flow run
    assert manifest["spec"]["backoffLimit"] == 0
    assert job.namespace == manifest["metadata"]["namespace"] == defaults(kind)["namespace"]
    # a variable left unset leaves its key out, not an empty value
    assert "nodeSelector" not in spec and "imagePullSecrets" not in spec
    assert "cpu" not in container(job)["resources"]["limits"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_shared_storage_is_mounted_at_the_same_path_in_every_pool(kind):
    claim, path = shared_mount(render(kind))
    assert (claim, path) == (defaults(kind)["shared_claim_name"], "/data")
    assert (claim, path) == shared_mount(render("cpu")) == shared_mount(render("gpu"))
    # TRICKFLOW_HOME is shared state too
    assert defaults(kind)["env"]["TRICKFLOW_HOME"].startswith(path.rstrip("/") + "/")
    moved = render(kind, {"shared_claim_name": "nfs-big", "shared_mount_path": "/mnt/big"})
    assert shared_mount(moved) == ("nfs-big", "/mnt/big")


def test_only_the_gpu_pool_asks_for_gpus_and_a_memory_backed_dev_shm():
    gpu = render("gpu")
    assert container(gpu)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container(render("gpu", {"gpu_count": 4}))["resources"]["limits"]["nvidia.com/gpu"] == 4
    shm = {m["name"] for m in container(gpu)["volumeMounts"] if m["mountPath"] == "/dev/shm"}
    assert len(shm) == 1
    (volume,) = [v for v in pod(gpu)["volumes"] if v["name"] in shm]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert volume["emptyDir"]["sizeLimit"] == defaults("gpu")["shm_size"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod(gpu)[
        "tolerations"
    ]
    selected = render("gpu", {"node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100"}})
    assert pod(selected)["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100"}

    cpu = render("cpu")
    assert "nvidia.com/gpu" not in json.dumps(cpu.job_manifest)
    assert "/dev/shm" not in json.dumps(cpu.job_manifest)
    assert "tolerations" not in pod(cpu)
    assert "gpu_count" not in template("cpu")["variables"]["properties"]


@pytest.mark.parametrize("kind", KINDS)
def test_secrets_come_from_the_secret_and_plain_settings_from_the_pool_env(kind):
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert secret["kind"] == "Secret"
    assert set(secret["stringData"]) == SECRET_KEYS
    assert secret["metadata"]["name"] == defaults(kind)["credentials_secret"]
    assert secret["metadata"]["namespace"] == defaults(kind)["namespace"]

    job = render(kind)
    assert container(job)["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    # prefect-kubernetes writes the configuration's env into the container's env list
    assert set(job.env) >= PLAIN_ENV
    assert not set(job.env) & SECRET_KEYS, "a secret would sit in plain text in the Job"
    assert "REPLACE-ME" not in json.dumps(template(kind)), "template with a placeholder secret"

    # a deployment's env is merged over the pool's, it does not replace it
    job = render(kind, {"env": {"TF_CPP_MIN_LOG_LEVEL": "1", "TRICKFLOW_HOME": "/data/x"}})
    assert set(job.env) >= PLAIN_ENV | {"TF_CPP_MIN_LOG_LEVEL"}
    assert job.env["TRICKFLOW_HOME"] == "/data/x"


def test_the_pools_share_namespace_storage_credentials_and_settings():
    cpu, gpu = defaults("cpu"), defaults("gpu")
    for name in ("namespace", "shared_claim_name", "shared_mount_path", "credentials_secret"):
        assert cpu[name] == gpu[name], name
    assert cpu["env"] == gpu["env"]


def test_jobs_get_the_workers_prefect_api_url_and_auth():
    """The pool sets no PREFECT_API_URL: Prefect copies the worker's API settings into every
    job's env (this is the Prefect behaviour the templates rely on)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
    from prefect.workers.base import BaseJobConfiguration

    url = "http://prefect-server.trickflow.svc.cluster.local:4200/api"
    with temporary_settings({PREFECT_API_URL: url, PREFECT_API_AUTH_STRING: "trickflow:x"}):
        env = BaseJobConfiguration._base_environment()
    assert env["PREFECT_API_URL"] == url
    assert env["PREFECT_API_AUTH_STRING"] == "trickflow:x"


def test_the_storage_example_is_a_read_write_many_claim_of_the_pools_name():
    claim = yaml.safe_load((K8S / "shared-storage.yaml").read_text())
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["metadata"]["name"] == defaults("cpu")["shared_claim_name"]
    assert claim["metadata"]["namespace"] == defaults("cpu")["namespace"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_old_gpu_template_is_gone():
    assert not (ROOT / "infra" / "scale-out" / "gpu-job-template.json").exists()


# ---- Dockerfile ------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    found, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        found.append((word.upper(), " ".join(rest.split())))
        current = ""
    assert not current, "the Dockerfile ends in a continuation line"
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def env_of(steps) -> dict[str, str]:
    env = {}
    for word, args in steps:
        if word == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(args))
    return env


def run_commands(steps, program: str) -> list[str]:
    """The arguments of every `program ...` in RUN instructions (`pip install` also as
    `python3 -m pip install`)."""
    pattern = re.compile(rf"(?<![\w.-]){re.escape(program)}(?![\w.-])([^;&|)]*)")
    return [m.group(1).strip() for w, args in steps if w == "RUN" for m in pattern.finditer(args)]


def copies(steps) -> list[tuple[int, list[str], str]]:
    """(index, sources, destination) of the COPY instructions from the build context."""
    found = []
    for index, (word, args) in enumerate(steps):
        if word in ("COPY", "ADD"):
            parts = shlex.split(args)
            if any(part.startswith("--from") for part in parts):
                continue
            parts = [part for part in parts if not part.startswith("--")]
            found.append((index, [s.rstrip("/") for s in parts[:-1]], parts[-1]))
    return found


def test_the_image_starts_from_python_3_11_slim_by_default():
    steps = instructions()
    assert steps[0] == ("ARG", "BASE=python:3.11-slim-bookworm")
    assert all(args.split()[0] == "${BASE}" for word, args in steps if word == "FROM")


def test_dependencies_come_only_from_the_lock():
    steps = instructions()
    syncs = run_commands(steps, "uv sync")
    assert len(syncs) == 2, syncs
    for flags in syncs:
        assert "--frozen" in flags.split() and "--no-dev" in flags.split(), flags
        # editable: the code stays at /opt/trickflow beside schemas/ and uv.lock, which it reads
        assert "--no-editable" not in flags
    assert "--no-install-project" in syncs[0] and "--no-install-project" not in syncs[1]
    # pip installs uv, pinned, and nothing else; uv installs nothing beside the lock
    pips = run_commands(steps, "pip install")
    assert pips, "uv is installed with pip"
    for args in pips:
        packages = [a for a in shlex.split(args) if not a.startswith("-")]
        assert len(packages) == 1 and packages[0].startswith("uv=="), args
    assert re.search(r"UV_VERSION=\d+\.\d+\.\d+", " ".join(a for w, a in steps if w == "ARG"))
    for forbidden in ("uv pip", "uv add", "uv lock", "uv run --with", "pipx", "conda"):
        assert not run_commands(steps, forbidden), forbidden


def test_the_lock_is_installed_before_the_code_is_copied():
    steps = instructions()
    sync_at = [i for i, (w, a) in enumerate(steps) if w == "RUN" and "uv sync" in a]
    copied = copies(steps)
    lock_copy = [i for i, sources, _ in copied if sources == ["pyproject.toml", "uv.lock"]]
    code_copies = [i for i, sources, _ in copied if set(sources) & {"components", "flows"}]
    assert lock_copy and code_copies
    assert lock_copy[0] < sync_at[0] < min(code_copies) <= max(code_copies) < sync_at[1]


def test_the_image_copies_only_what_the_package_needs():
    import tomllib

    copied = copies(instructions())
    sources = {source for _, group, _ in copied for source in group}
    assert sources == IMAGE_SOURCES
    for source in sources:
        assert (ROOT / source).exists(), source
    assert all(dest == "./" or dest.startswith("./") for _, _, dest in copied)
    assert ("WORKDIR", APP) in instructions()

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project.get("tool", {}).get("hatch", {}).get("build", {}).get("targets", {})
    packages = wheel.get("wheel", {}).get("packages")
    assert packages, "pyproject.toml names no packages (tool.hatch.build.targets.wheel)"
    assert set(packages) <= sources, "a package of pyproject.toml is not in the image"
    if "readme" in project["project"]:
        assert project["project"]["readme"] in sources


def _code_patterns() -> tuple[str, ...] | None:
    module = ast.parse((ROOT / "flows" / "train_imagenet.py").read_text())
    for node in module.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CODE" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return None


def test_the_code_digest_sees_the_same_files_in_the_image():
    """The flow's code_version() digests CODE's files under the repository root; in the image
    that root is /opt/trickflow, which must hold every one of them."""
    patterns = _code_patterns()
    if patterns is None:
        pytest.skip("flows/train_imagenet.py has no CODE patterns")
    sources = {source for _, group, _ in copies(instructions()) for source in group}
    for pattern in patterns:
        assert pattern.split("/")[0] in sources, pattern


def test_the_runtime_stage_runs_the_locked_environment_as_a_user():
    stage = final_stage()
    env = env_of(stage)
    assert env["PATH"].split(":")[0] == f"{APP}/.venv/bin"
    assert env["TRICKFLOW_REPO"] == APP
    assert ("WORKDIR", APP) in stage
    users = [args for word, args in stage if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # the pods' args are Prefect's whole command: nothing may be put in front of it
    assert [args for word, args in stage if word == "ENTRYPOINT"] in ([], ["[]"])
    (cmd,) = [json.loads(args) for word, args in stage if word == "CMD"]
    assert cmd[:3] == ["prefect", "worker", "start"] and "kubernetes" in cmd


def test_no_pythonpath_anywhere():
    for word, args in instructions():
        assert "PYTHONPATH" not in args, (word, args)


# ---- .dockerignore ---------------------------------------------------------------------------


def _ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.lstrip("!").strip().strip("/")
        regex, i = "", 0
        while i < len(line):
            if line.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif line.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif line[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif line[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif line[i] == "[":
                end = line.index("]", i)
                regex, i = regex + line[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(line[i]), i + 1
        patterns.append((negate, re.compile(regex)))
    return patterns


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in _ignore_patterns():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".venv-gpu/lib/python3.11/site-packages/keras/__init__.py",
        ".trickflow/prefect/prefect.db",
        ".trickflow/credentials.env",
        ".git/HEAD",
        "data/imagenet/train/n01440764/a.JPEG",
        "bench/data/photos/a.jpg",
        "mlruns/0/meta.yaml",
        "mlflow.db",
        "build/lib/components/__init__.py",
        "dist/trickflow-0.1.0-py3-none-any.whl",
        "components/__pycache__/schema.cpython-311.pyc",
        "flows/__pycache__/train_imagenet.cpython-311.pyc",
        "tests/test_flow.py",
        ".whl/keras-3.15.1-py3-none-any.whl",
    ],
)
def test_the_build_context_leaves_out(path):
    assert ignored(path)


def test_the_build_context_holds_everything_the_dockerfile_copies():
    for source in IMAGE_SOURCES:
        assert not ignored(source), source
        if (ROOT / source).is_dir():
            for file in (ROOT / source).rglob("*"):
                relative = file.relative_to(ROOT).as_posix()
                if file.is_file() and "__pycache__" not in relative:
                    assert not ignored(relative), relative


# ---- the GPU image against the locked TensorFlow ----------------------------------------------


def test_the_documented_gpu_base_has_the_cuda_and_cudnn_tensorflow_was_built_for():
    """The locked tensorflow names the CUDA and cuDNN it was built for in its `and-cuda` extra;
    the GPU build documented in the README must provide the same (cuDNN to the build, CUDA to
    the minor version)."""
    try:
        requires = importlib.metadata.requires("tensorflow") or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorflow is not installed")
    pins = {}
    for requirement in requires:
        match = re.match(r"(nvidia-[a-z-]+-cu12)\s*==\s*([\d.]+)\s*;.*and-cuda", requirement)
        if match:
            pins[match.group(1)] = match.group(2)
    if not pins:
        pytest.skip("this tensorflow has no and-cuda extra")
    cudnn = pins["nvidia-cudnn-cu12"]
    cuda = ".".join(pins["nvidia-cuda-runtime-cu12"].split(".")[:2])
    readme = (K8S / "README.md").read_text()
    assert f"libcudnn{cudnn.split('.')[0]}={cudnn}-" in readme
    assert f"nvidia/cuda:{cuda}." in readme and f"cuda-nvcc-{cuda.replace('.', '-')}" in readme
