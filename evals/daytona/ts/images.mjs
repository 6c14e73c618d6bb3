// Declarative images through the TypeScript SDK, built in real builder VMs: snapshot.create from
// an Image (apt, pip, env) with its build log streamed to onLogs, the snapshot under
// daytona.snapshot, a sandbox from it with what the image installed, snapshot.delete;
// create({ image }) building an image within the create and reusing it for the next create of
// the same image; and a failing image (build_failed, the failure as the reason).
import { check, client, deleteAll, expectError, run, sdk } from './common.mjs'

// Builds run in VMs (slow under emulation): generous limits, seconds.
const BUILD_TIMEOUT = 900

async function ok(s, command) {
  const r = await s.process.executeCommand(command)
  check(r.exitCode === 0, `${command} exits 0`, [r.exitCode, r.result])
  return r.result.trim()
}

await run('typescript images', async () => {
  const d = client()
  const tag = Date.now().toString(36)
  const made = []
  try {
    // A snapshot from an Image, its log followed.
    const name = `Images-TS/${tag}:v1`
    const image = sdk.Image.base('python:3.11')
      .runCommands('apt-get update && apt-get install -y jq', 'python3 -m pip install six')
      .env({ GREETING: 'hi there' })
      .workdir('/srv')
    const logs = []
    const snap = await d.snapshot.create(
      { name, image, resources: { cpu: 1, memory: 1 } },
      { onLogs: (l) => logs.push(l), timeout: BUILD_TIMEOUT },
    )
    check(logs.some((l) => l.includes('jq') && !l.startsWith('Creat')), 'the build log reached onLogs', logs.slice(-20))
    check(snap.name === name && snap.state === 'active' && snap.cpu === 1 && snap.mem === 1, 'created active', snap)
    check((await d.snapshot.get(name)).id === snap.id, 'snapshot.get by its name')
    check((await d.snapshot.list(1, 200)).items.some((x) => x.name === name), 'snapshot.list shows it')

    const s = await d.create({ snapshot: name }, { timeout: 300 })
    made.push(s)
    check((await ok(s, 'jq --version')).startsWith('jq-'), 'jq installed by apt')
    await ok(s, "python3 -c 'import six'")
    check((await ok(s, 'echo $GREETING')) === 'hi there', 'ENV reaches the sandbox')
    await d.delete(s)
    made.pop()
    await d.snapshot.delete(name)
    await expectError(() => d.snapshot.get(name), sdk.DaytonaNotFoundError, 'deleted snapshot')

    // A sandbox from an image: built within the create, then reused.
    const img = sdk.Image.base('debian:12').runCommands(`echo built-${tag} > /built.txt`)
    let t0 = Date.now()
    const a = await d.create({ image: img }, { timeout: BUILD_TIMEOUT })
    const builtIn = Date.now() - t0
    made.push(a)
    check(a.state === 'started' && a.snapshot.startsWith('img-'), 'started from the image template', [a.state, a.snapshot])
    check((await ok(a, 'cat /built.txt')) === `built-${tag}`, "the image's file")
    const built = await d.snapshot.get(a.snapshot)
    t0 = Date.now()
    const b = await d.create({ image: img }, { timeout: 300 })
    const againIn = Date.now() - t0
    made.push(b)
    check(b.snapshot === a.snapshot, 'the same image, the same template', [a.snapshot, b.snapshot])
    const again = await d.snapshot.get(a.snapshot)
    check(again.buildInfo.updatedAt === built.buildInfo.updatedAt, 'the second create built nothing', [built.buildInfo, again.buildInfo])
    check(againIn < builtIn, 'the second create is faster', [builtIn, againIn])
    console.log(`  image: built and started in ${(builtIn / 1000).toFixed(1)}s, again in ${(againIn / 1000).toFixed(1)}s`)
    await d.delete(a)
    await d.delete(b)
    made.length = 0
    await d.snapshot.delete(a.snapshot)

    // A failing image.
    const failing = `images-ts-fail-${tag}`
    const e = await expectError(
      () => d.snapshot.create({ name: failing, image: sdk.Image.base('debian:12').runCommands('exit 3') }, { timeout: BUILD_TIMEOUT }),
      sdk.DaytonaError,
      'a failing build',
    )
    check(e.message.includes('exit 3'), 'the failure is named', e.message)
    const failed = await d.snapshot.get(failing)
    check(failed.state === 'build_failed' && failed.errorReason.includes('exit 3'), 'build_failed with its reason', failed)
    await d.snapshot.delete(failing)
  } finally {
    await deleteAll(d, made)
  }
})
