#!/usr/bin/env python3
"""Checks the deployment files beyond "docker-compose.yml is valid" (run by check-compose.sh).

- Each service sees only its own secrets: compose is rendered with a distinct marker for
  every secret of .env.example, and every marker found in a service (its environment, its
  env files, its command) must be one the table below allows that service's role (the
  service name without a trailing `-<n>`: `api-1` and `api-2` are the role `api`; the
  RabbitMQ peers `rabbitmq-2` and `rabbitmq-3` are their own).
- Every Stargazer role runs at least twice (services of that role outside any profile,
  times their `deploy.replicas`); the coordinators have distinct instance ids and distinct
  advertised URLs; every worker's coordinator_url lists every coordinator's advertised URL
  and nothing else; the worker-youtube instances have distinct public (WebSub) URLs.
- The api instances share one name: each has the network alias `api` and serves the
  RabbitMQ auth backend (internal listener and its secret), and RabbitMQ's auth backend
  and the bot call `api`, not one instance.
- No service reads .env whole; deploy/stargazer.env (seen by every service) sets no secret.
- RabbitMQ and MongoDB publish ports on loopback only (or not at all).
- .env is git-ignored; .dockerignore keeps build output, dependencies, virtualenvs, .git
  and .env out of the image's build context.
- deploy/bootstrap.sh refuses placeholder and short passwords (exit 2) before creating
  anything, and creates every account from good ones.

Usage: check-compose.py <scratch dir holding docker-compose.yml, deploy/, .env.example>
"""

import json
import os
import re
import stat
import subprocess
import sys

import yaml

# Which roles (see role()) may see each secret of .env.example. A new secret must be added
# here.
ALLOWED = {
    "ADMIN_PASSWORD": {"bootstrap"},
    "TOPOLOGY_PASSWORD": {"bootstrap"},
    "BOT_PASSWORD": {"bootstrap", "bot-telegram"},
    "WORKER_PASSWORD": {
        "bootstrap",
        "worker-youtube",
        "worker-twitter",
        "worker-twitch",
        "worker-bilibili",
    },
    "MIDDLEWARE_DELAY_PASSWORD": {"bootstrap", "middleware-delay"},
    "MIDDLEWARE_TRANSLATE_PASSWORD": {"bootstrap", "middleware-translate"},
    "MIDDLEWARE_LIVE_CHECK_PASSWORD": {"bootstrap", "middleware-live-check"},
    "BROKER_AUTH_SECRET": {"api", "rabbitmq", "rabbitmq-2", "rabbitmq-3"},
    "RABBITMQ_ERLANG_COOKIE": {"rabbitmq", "rabbitmq-2", "rabbitmq-3"},
    "STARGAZER_TELEGRAM_TOKEN": {"bot-telegram"},
    "STARGAZER_YOUTUBE_API_KEY": {"worker-youtube", "middleware-live-check"},
    "STARGAZER_TWITTER_BEARER_TOKEN": {"worker-twitter"},
    "STARGAZER_TWITCH_CLIENT_SECRET": {"worker-twitch"},
    "STARGAZER_TWITCH_EVENTSUB_SECRET": {"worker-twitch"},
    "STARGAZER_DEEPL_KEY": {"middleware-translate"},
    "BOT_DISCORD_PASSWORD": {"bootstrap", "bot-discord"},
    "BOT_QQ_PASSWORD": {"bootstrap", "bot-qq"},
    "STARGAZER_DISCORD__TOKEN": {"bot-discord"},
    "STARGAZER_DISCORD__PUBLIC_KEY": {"bot-discord"},
    "STARGAZER_QQ__ACCESS_TOKEN": {"bot-qq"},
    "STARGAZER_QQ__SECRET": {"bot-qq"},
}
# Accounts bootstrap makes only when their password is set (bots in compose profiles).
OPTIONAL_ACCOUNTS = {"BOT_DISCORD_PASSWORD": "bot-discord", "BOT_QQ_PASSWORD": "bot-qq"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|COOKIE|_KEY$")
# Services that must not be reachable from beyond the host.
INTERNAL = {"rabbitmq", "rabbitmq-2", "rabbitmq-3", "mongo"}
# Nodes of one RabbitMQ cluster, each configured on its own: not instances of a role.
RABBITMQ_PEERS = {"rabbitmq-2", "rabbitmq-3"}
# The Stargazer roles, each of which must run at least twice.
ROLES = [
    "api",
    "coordinator",
    "worker-youtube",
    "worker-twitter",
    "worker-twitch",
    "worker-bilibili",
    "middleware-delay",
    "middleware-translate",
    "middleware-live-check",
    "bot-telegram",
]
WORKER_ROLES = [role for role in ROLES if role.startswith("worker-")]
PLACEHOLDERS = ["change-me", "CHANGE-ME", "changeme", "password", "guest", "short-1"]

problems = []


def problem(text):
    problems.append(text)


def role(service):
    """The role a service is an instance of: `worker-youtube-2` → `worker-youtube`."""
    if service in RABBITMQ_PEERS:
        return service
    return re.sub(r"-[0-9]+$", "", service)


def environment(spec):
    """A rendered service's environment as a dict (compose renders a mapping or a list)."""
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def env_assignments(text):
    """KEY=VALUE lines that are not comments."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def check_secrets(scratch, repo):
    example = env_assignments(open(os.path.join(repo, ".env.example")).read())
    secrets = [name for name in example if SECRET_NAME.search(name)]
    for name in secrets:
        if name not in ALLOWED:
            problem(f".env.example: secret {name} is not in check-compose.py's table of who may see it")
    markers = {name: f"Marker{index:02d}x{name.lower().replace('_', 'x')}x0123456789" for index, name in enumerate(secrets)}
    env = dict(example)
    env.update(markers)
    with open(os.path.join(scratch, ".env"), "w") as f:
        for key, value in env.items():
            f.write(f"{key}={value}\n")
    rendered = subprocess.run(
        ["docker-compose", "config"], cwd=scratch, check=True, capture_output=True, text=True
    ).stdout
    config = yaml.safe_load(rendered)
    services = config.get("services", {})
    roles = {role(service) for service in services}
    for service, spec in services.items():
        env_files = spec.get("env_file") or []
        if isinstance(env_files, str):
            env_files = [env_files]
        seen = json.dumps(spec)
        for path in env_files:
            path = path if isinstance(path, str) else path.get("path", "")
            if os.path.basename(path) == ".env":
                problem(f"{service}: reads .env whole (env_file); name the values it needs instead")
            full = path if os.path.isabs(path) else os.path.join(scratch, path)
            if os.path.exists(full):
                seen += open(full).read()
        for name, marker in markers.items():
            if marker in seen and role(service) not in ALLOWED.get(name, set()):
                problem(f"{service}: gets {name}, which is not its own secret (role {role(service)})")
        for port in spec.get("ports") or []:
            if service not in INTERNAL:
                continue
            if isinstance(port, dict):
                host_ip = port.get("host_ip", "")
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else ""
            if host_ip not in ("127.0.0.1", "::1", "[::1]"):
                problem(f"{service}: publishes {port} beyond loopback")
    for name in ALLOWED:
        for service in ALLOWED[name]:
            if service not in roles:
                problem(f"check-compose.py: {name} is allowed to unknown role {service}")
    shared = env_assignments(open(os.path.join(repo, "deploy", "stargazer.env")).read())
    for key, value in shared.items():
        if SECRET_NAME.search(key) and value:
            problem(f"deploy/stargazer.env sets {key}: every service would see it; put it in .env")
        if re.search(r"://[^/@\s]*:[^/@\s]+@", value):
            problem(f"deploy/stargazer.env: {key} holds a URL with a password")
    return services


def check_pairs(services):
    """Every role twice, the coordinator pair told apart and known to every worker, and
    one WebSub URL per worker-youtube instance."""
    # (service, environment) per running instance: a service outside every profile, once
    # per replica.
    instances = {name: [] for name in ROLES}
    for service, spec in services.items():
        if spec.get("profiles") or role(service) not in instances:
            continue
        replicas = (spec.get("deploy") or {}).get("replicas", 1)
        for _ in range(int(replicas)):
            instances[role(service)].append((service, environment(spec)))
    for name in ROLES:
        count = len(instances[name])
        if count < 2:
            services_of_role = sorted({service for service, _ in instances[name]})
            problem(
                f"docker-compose.yml: role {name} runs {count} instance(s) "
                f"(services: {', '.join(services_of_role) or 'none'}); every Stargazer role runs at least twice"
            )

    def distinct(role_name, key, what):
        """Each instance of the role sets key, and no two alike; returns the values."""
        seen = {}
        for service, env in instances[role_name]:
            value = env.get(key, "")
            if not value:
                problem(f"docker-compose.yml: {service} sets no {key} ({what})")
            elif value in seen:
                problem(f"docker-compose.yml: {service} and {seen[value]} share {key}={value} ({what})")
            else:
                seen[value] = service
        return set(seen)

    distinct("coordinator", "STARGAZER_COORDINATOR__INSTANCE_ID", "the name in the leader election")
    advertised = distinct("coordinator", "STARGAZER_COORDINATOR__ADVERTISE_URL", "the URL workers reach it at")
    for worker_role in WORKER_ROLES:
        for service, env in instances[worker_role]:
            listed = {url.strip() for url in env.get("STARGAZER_WORKER__COORDINATOR_URL", "").split(",") if url.strip()}
            for url in sorted(advertised - listed):
                problem(f"docker-compose.yml: {service}: STARGAZER_WORKER__COORDINATOR_URL lacks coordinator {url}")
            for url in sorted(listed - advertised):
                problem(
                    f"docker-compose.yml: {service}: STARGAZER_WORKER__COORDINATOR_URL lists {url}, "
                    "no coordinator's ADVERTISE_URL"
                )
    distinct("worker-youtube", "STARGAZER_YOUTUBE__PUBLIC_URL", "the hub calls back the instance that subscribed")
    check_api_alias(services, instances)


# The name every api instance answers to inside the compose network.
API_ALIAS = "api"


def check_api_alias(services, instances):
    """Whoever calls the api inside the network reaches any running instance."""
    for service, env in instances["api"]:
        networks = services[service].get("networks") or {}
        aliases = (networks.get("default") or {}).get("aliases") or []
        if API_ALIAS not in aliases:
            problem(f"docker-compose.yml: {service} lacks the network alias `{API_ALIAS}` on the default network")
        for key in ("STARGAZER_API__INTERNAL_LISTEN", "STARGAZER_API__AUTH_SECRET"):
            if not env.get(key):
                problem(f"docker-compose.yml: {service} sets no {key}: RabbitMQ's auth backend may call it")
    for service, env in instances["bot-telegram"]:
        url = env.get("STARGAZER_TELEGRAM__STARGAZER_API_URL", "")
        if not re.match(rf"https?://{API_ALIAS}[:/]", url):
            problem(f"docker-compose.yml: {service} calls the api at {url!r}, not through the alias `{API_ALIAS}`")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, "deploy", "rabbitmq", "rabbitmq.conf")) as conf:
        for line in conf:
            if line.startswith("auth_http.") and "://" in line:
                host = re.search(r"://(?:[^@/]*@)?([^:/]+)", line)
                if not host or host.group(1) != API_ALIAS:
                    problem(f"deploy/rabbitmq/rabbitmq.conf: {line.strip()} does not call the alias `{API_ALIAS}`")


def check_ignores(repo):
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=repo).returncode == 0
    if not ignored:
        problem(".env is not git-ignored")
    path = os.path.join(repo, ".dockerignore")
    if not os.path.exists(path):
        problem(".dockerignore is missing")
        return
    entries = {line.strip().rstrip("/") for line in open(path) if line.strip() and not line.startswith("#")}
    for required in ["target", "**/node_modules", ".venv*", ".git", ".env"]:
        if required not in entries:
            problem(f".dockerignore does not exclude {required}")


def check_bootstrap(scratch):
    bin_dir = os.path.join(scratch, "fake-bin")
    os.makedirs(bin_dir, exist_ok=True)
    log = os.path.join(scratch, "fake-calls")
    fake = os.path.join(bin_dir, "stargazer")
    with open(fake, "w") as f:
        f.write(f'#!/bin/sh\necho "$*" >> "{log}"\ncat >/dev/null\n')
    os.chmod(fake, os.stat(fake).st_mode | stat.S_IEXEC)
    good = {
        "ADMIN_PASSWORD": "a" * 12 + "0123456789",
        "TOPOLOGY_PASSWORD": "t" * 12 + "0123456789",
        "BOT_PASSWORD": "b" * 12 + "0123456789",
        "WORKER_PASSWORD": "c" * 12 + "0123456789",
        "MIDDLEWARE_DELAY_PASSWORD": "d" * 12 + "0123456789",
        "MIDDLEWARE_TRANSLATE_PASSWORD": "e" * 12 + "0123456789",
        "MIDDLEWARE_LIVE_CHECK_PASSWORD": "f" * 12 + "0123456789",
    }

    def run(passwords):
        if os.path.exists(log):
            os.remove(log)
        env = {"PATH": bin_dir + os.pathsep + os.environ["PATH"], **passwords}
        result = subprocess.run(
            ["sh", os.path.join(scratch, "deploy", "bootstrap.sh")], env=env, capture_output=True, text=True
        )
        calls = open(log).read().splitlines() if os.path.exists(log) else []
        return result, calls

    for name in good:
        for bad in PLACEHOLDERS + [""]:
            result, calls = run({**good, name: bad})
            if result.returncode != 2 or calls:
                problem(f"bootstrap.sh accepted {name}={bad!r} (exit {result.returncode}, calls {calls})")
            elif name not in result.stderr:
                problem(f"bootstrap.sh refused {name}={bad!r} without naming it: {result.stderr!r}")
        result, calls = run({k: v for k, v in good.items() if k != name})
        if result.returncode != 2 or calls:
            problem(f"bootstrap.sh accepted a missing {name}")
    required = [
        "admin",
        "bot-telegram",
        "middleware-delay",
        "middleware-live-check",
        "middleware-translate",
        "topology",
        "worker",
    ]
    result, calls = run(good)
    added = [call.split()[3] for call in calls if call.startswith("admin credential add")]
    if result.returncode != 0 or sorted(added) != required:
        problem(f"bootstrap.sh with good passwords: exit {result.returncode}, accounts {added}: {result.stderr}")
    optional = {name: "o" * 12 + str(i) * 10 for i, name in enumerate(OPTIONAL_ACCOUNTS)}
    for name in optional:
        for bad in PLACEHOLDERS:
            result, calls = run({**good, **optional, name: bad})
            if result.returncode != 2 or calls:
                problem(f"bootstrap.sh accepted {name}={bad!r} (exit {result.returncode}, calls {calls})")
    result, calls = run({**good, **optional})
    added = [call.split()[3] for call in calls if call.startswith("admin credential add")]
    if result.returncode != 0 or sorted(added) != sorted(required + list(OPTIONAL_ACCOUNTS.values())):
        problem(f"bootstrap.sh with the bots' passwords: exit {result.returncode}, accounts {added}: {result.stderr}")


def main():
    scratch = sys.argv[1]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    services = check_secrets(scratch, repo)
    check_pairs(services)
    check_ignores(repo)
    check_bootstrap(scratch)
    if problems:
        for text in problems:
            print(f"check-compose: {text}", file=sys.stderr)
        sys.exit(1)
    print(
        "check-compose: secrets are per service, ports internal, every role runs twice with the "
        "coordinator pair, ignores and bootstrap checks in place"
    )


if __name__ == "__main__":
    main()
