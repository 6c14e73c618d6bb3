"""Git, sync and async, without network: a bare repository in the sandbox is the remote.
init, add, commit, status, branches (create, checkout, delete), remotes, push, clone (file://),
pull, config, reset/restore, and Daytona's git error codes."""

from common import async_sandbox, check, expect_error, main_sync_async, sandbox
from daytona import (
    DaytonaGitBranchExistsError,
    DaytonaGitBranchNotFoundError,
    DaytonaGitRepoNotFoundError,
)


def sync_flow():
    with sandbox() as s:
        g, fs = s.git, s.fs
        g.init("origin.git", bare=True, initial_branch="main")
        g.init("work", initial_branch="main")
        fs.upload_file(b"v1\n", "work/README.md")
        st = g.status("work")
        check(st.current_branch == "main" and [(f.name, f.staging.value) for f in st.file_status] == [("README.md", "Untracked")], "status untracked", st)
        g.add("work", ["README.md"])
        check(g.status("work").file_status[0].staging.value == "Added", "status added")
        c = g.commit("work", "first", "Ada", "ada@example.com")
        check(len(c.sha) == 40, "commit hash", c)
        check(g.status("work").file_status == [], "clean after commit")
        g.remote_add("work", "origin", "/home/user/origin.git")
        check([(r.name, r.url) for r in g.remotes("work").remotes] == [("origin", "/home/user/origin.git")], "remotes")
        g.push("work", remote="origin", branch="main", set_upstream=True)

        g.clone("file:///home/user/origin.git", "clone")
        check(fs.download_file("clone/README.md") == b"v1\n", "clone content")
        expect_error(lambda: g.clone("file:///home/user/origin.git", "c2", branch="nope"), DaytonaGitBranchNotFoundError, "missing branch", code="GIT_BRANCH_NOT_FOUND")
        expect_error(lambda: g.clone("file:///home/user/none.git", "c3"), DaytonaGitRepoNotFoundError, "missing repo", code="GIT_REPO_NOT_FOUND")
        expect_error(lambda: g.status("/tmp"), DaytonaGitRepoNotFoundError, "not a repository", code="GIT_REPO_NOT_FOUND")

        g.create_branch("work", "feature")
        expect_error(lambda: g.create_branch("work", "feature"), DaytonaGitBranchExistsError, "branch exists", code="GIT_BRANCH_EXISTS")
        g.checkout_branch("work", "feature")
        fs.upload_file(b"v2\n", "work/README.md")
        check(g.status("work").file_status[0].worktree.value == "Modified", "modified in worktree")
        g.restore("work", ["README.md"])
        check(fs.download_file("work/README.md") == b"v1\n" and g.status("work").file_status == [], "restore")
        fs.upload_file(b"v2\n", "work/README.md")
        g.add("work", ["README.md"])
        g.commit("work", "second", "Ada", "ada@example.com")
        b = g.branches("work")
        check(sorted(b.branches) == ["feature", "main"], "branches", b)
        g.checkout_branch("work", "main")
        g.delete_branch("work", "feature")
        check(g.branches("work").branches == ["main"], "delete branch")

        fs.upload_file(b"v3\n", "work/README.md")
        g.add("work", ["README.md"])
        g.commit("work", "third", "Ada", "ada@example.com")
        g.push("work")
        g.pull("clone")
        check(fs.download_file("clone/README.md") == b"v3\n", "pull")
        g.reset("clone", mode="hard", target="HEAD~1")
        check(fs.download_file("clone/README.md") == b"v1\n", "reset --hard")

        g.configure_user("Grace", "grace@example.com")
        check(g.get_config("user.name") == "Grace", "global config")
        check(g.get_config("no.such.key") is None, "unset config is None")


async def async_flow():
    async with async_sandbox() as s:
        await s.git.init("repo", initial_branch="trunk")
        await s.fs.upload_file(b"x", "repo/x")
        await s.git.add("repo", ["x"])
        c = await s.git.commit("repo", "x", "A", "a@example.com")
        check(len(c.sha) == 40, "async commit")
        check((await s.git.branches("repo")).branches == ["trunk"], "async branches")


main_sync_async("python git (sync + async)", sync_flow, async_flow)
