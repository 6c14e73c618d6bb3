# (Not `secrets.py`: that name would shadow the standard library module pydantic imports.)
"""Secrets through the Python SDK: daytona.secret.create (the answer has a placeholder, never the
value; a second one of the same name is a conflict), list (paged, filtered by name), get, update
(hosts and value; the value is never answered), a sandbox created with secrets={"ENV": name}
sees the placeholder, never the value, in its environment; the secret cannot be deleted while
that sandbox holds it; update_secrets replaces the sandbox's variables, and once it detached
them all the secret can be deleted (then not found)."""

import uuid

from common import check, client, delete_all, expect_error, main
from daytona import CreateSandboxFromSnapshotParams
from daytona.common.secret import CreateSecretParams, UpdateSecretParams

# The SDK's secret service passes the API client's exceptions through (its docstrings name them).
from daytona_api_client.exceptions import ConflictException, NotFoundException

VALUE = "sk-eval-" + uuid.uuid4().hex


def body():
    d = client()
    name = f"sec-{uuid.uuid4().hex[:8]}"
    s = d.secret.create(CreateSecretParams(name=name, value=VALUE, hosts=["api.example.com"]))
    check(s.name == name and s.hosts == ["api.example.com"], "secret.create", s)
    check(s.placeholder and VALUE not in s.model_dump_json(), "the placeholder, never the value", s)
    expect_error(
        lambda: d.secret.create(CreateSecretParams(name=name, value="x")), ConflictException, "a taken name"
    )
    page = d.secret.list(limit=50, name=name)
    check([x.id for x in page.items] == [s.id] and page.total == 1, "secret.list by name", page)
    check(d.secret.get(s.id).placeholder == s.placeholder, "secret.get")
    u = d.secret.update(s.id, UpdateSecretParams(hosts=["*.example.com"], value=VALUE + "-2"))
    check(u.hosts == ["*.example.com"] and VALUE not in u.model_dump_json(), "secret.update", u)
    made = []
    try:
        sb = d.create(CreateSandboxFromSnapshotParams(secrets={"API_TOKEN": name}))
        made.append(sb)
        r = sb.process.exec("printenv API_TOKEN; env | grep -c sk-eval- || true")
        lines = r.result.split()
        check(lines[:1] == [s.placeholder] and lines[-1] == "0", "the sandbox holds the placeholder only", r.result)
        expect_error(lambda: d.secret.delete(s.id), ConflictException, "deleting a secret a sandbox holds")
        sb.update_secrets({"OTHER_TOKEN": name})
        r = sb.process.exec("printenv OTHER_TOKEN; printenv API_TOKEN || echo gone")
        check(r.result.split() == [s.placeholder, "gone"], "update_secrets replaces the variables", r.result)
        sb.update_secrets({})
        d.secret.delete(s.id)
        expect_error(lambda: d.secret.get(s.id), NotFoundException, "the deleted secret")
        s = None
    finally:
        delete_all(d, made)
        if s is not None:
            d.secret.delete(s.id)


main("python egress_secrets", body)
