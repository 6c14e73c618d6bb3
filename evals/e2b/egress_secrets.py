"""Secrets through the Python SDK: Secret.create (a second of the same name refused), get_info by
id and by name, exists, list (paged), update (a new version; metadata replaced), destroy (then
gone: a second destroy is False, get_info raises SecretNotFoundException). Values never come
back. A sandbox's network rules put the secret into request headers (`Secret.fill`): get_info shows
the rules as given, update_network replaces them, an unknown secret or a workload identity token
is refused, and the secret cannot be destroyed while a rule uses it. (Not `secrets.py`: that name
would shadow the standard library module.)"""

from common import check, raises, step, tag
from e2b import Sandbox, SandboxException, Secret, SecretException, SecretNotFoundException

label = tag()
name = f"sec-{label}".lower()
VALUE = f"sk-e2b-eval-{label}"

with step("Secret.create"):
    s = Secret.create(name, VALUE, metadata={"team": "a"})
    check(s.name == name and s.secret_id.startswith("sec_") and s.version == 1, f"created {s}")
    check(s.metadata == {"team": "a"}, f"metadata {s.metadata}")
    raises(SecretException, lambda: Secret.create(name, "x"), "a second secret of the same name")

with step("Secret.get_info / exists / list"):
    check(Secret.get_info(s.secret_id).name == name, "get_info by id")
    check(Secret.get_info(name).secret_id == s.secret_id, "get_info by name")
    check(Secret.exists(name) and not Secret.exists(f"nope-{label}"), "exists")
    seen, pages = [], Secret.list(limit=1)
    while pages.has_next:
        seen += [x.secret_id for x in pages.next_items()]
    check(s.secret_id in seen, f"listed one per page: {len(seen)}")
    check(VALUE not in repr(Secret.get_info(name)), "the value never comes back")

with step("Secret.update"):
    u = Secret.update(name, VALUE + "-2", metadata={"team": "b"})
    check(u.version == 2 and u.metadata == {"team": "b"}, f"updated {u}")
    raises(SecretNotFoundException, lambda: Secret.update(f"nope-{label}", "x"), "updating no secret")

with step("network rules with Secret.fill: create, get_info, update_network; destroy refused while used"):
    header = {"Authorization": f"Bearer {Secret.fill(name)}"}
    rules = {"api.example.com": [{"transform": {"headers": header}}]}
    sbx = Sandbox.create(timeout=120, network={"allow_out": ["api.example.com"], "rules": rules})
    try:
        net = sbx.get_info().network
        check(net["rules"]["api.example.com"][0]["transform"]["headers"] == header, f"rules {net}")
        check("api.example.com" in net["allow_out"], f"allow_out {net}")
        raises(SecretException, lambda: Secret.destroy(s.secret_id), "destroying a secret a rule uses")
        unknown = {"*.example.org": [{"transform": {"headers": {"X-Key": Secret.fill(f"nope-{label}")}}}]}
        raises(SandboxException, lambda: sbx.update_network({"rules": unknown}), "a rule with no such secret")
        moved = {"*.example.org": [{"transform": {"headers": {"X-Key": Secret.fill(name)}}}]}
        sbx.update_network({"rules": moved})
        check(list(sbx.get_info().network["rules"]) == ["*.example.org"], "rules replaced")
        sbx.update_network({})
        check(not sbx.get_info().network.get("rules"), "rules cleared")
    finally:
        sbx.kill()

with step("Secret.destroy"):
    check(Secret.destroy(s.secret_id) is True, "destroyed")
    check(Secret.destroy(s.secret_id) is False, "a second destroy is False")
    raises(SecretNotFoundException, lambda: Secret.get_info(name), "the destroyed secret")
