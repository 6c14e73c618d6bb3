// Pause to disk, snapshots and fork through the JS SDK, proven by a background counter: pause
// (memory kept) and connect (the counter goes on from where it stopped; files kept),
// createSnapshot / listSnapshots / Sandbox.create(<snapshot id>) (a new sandbox with another
// hostname whose counter keeps counting), fork({ count: 2 }), and deleteSnapshot.

import { Sandbox, SandboxError } from 'e2b'
import { check, rejects, step, tag, waitUntil } from './common.mjs'

const label = tag()
const COUNTER = '/tmp/counter.py'
// Writes an increasing counter to /tmp/count every 0.2 s (atomically, so reads never see half).
const COUNTER_SCRIPT = `import os, time
n = 0
while True:
    n += 1
    with open("/tmp/count.tmp", "w") as f:
        f.write(str(n))
    os.replace("/tmp/count.tmp", "/tmp/count")
    time.sleep(0.2)
`

const count = async (sandbox) => Number(await sandbox.files.read('/tmp/count'))
const hostname = async (sandbox) => (await sandbox.commands.run('hostname')).stdout.trim()

// Waits until the counter in `sandbox` moves on.
async function counting(sandbox, what) {
  const start = await count(sandbox)
  await waitUntil(async () => (await count(sandbox)) > start, `the counter to keep counting in ${what}`)
}

async function snapshotIds(opts) {
  const paginator = Sandbox.listSnapshots({ limit: 1, ...opts })
  const ids = []
  while (paginator.hasNext) ids.push(...(await paginator.nextItems()).map((s) => s.snapshotId))
  return ids
}

const a = await step('create a sandbox running a counter, with a file', async () => {
  const s = await Sandbox.create({ timeoutMs: 600_000, metadata: { flow: label } })
  await s.files.write(COUNTER, COUNTER_SCRIPT)
  await s.commands.run(`nohup python3 ${COUNTER} > /dev/null 2>&1 &`)
  await waitUntil(async () => (await s.files.exists('/tmp/count')) && (await count(s)) >= 3, 'the counter to start')
  await s.files.write('/home/user/kept.txt', 'kept')
  return s
})
const made = [a]
try {
  const before = await step('pause to disk with memory, connect: the counter goes on', async () => {
    const before = await count(a)
    check((await a.pause()) === true, 'pause')
    check((await a.getInfo()).state === 'paused', 'paused')
    check((await a.pause()) === false, 'pausing a paused sandbox is false')
    const back = await Sandbox.connect(a.sandboxId, { timeoutMs: 600_000 })
    const after = await count(back)
    check(after >= before, `counter kept its value over the pause: ${before} -> ${after}`)
    await counting(back, 'the resumed sandbox')
    check((await back.files.read('/home/user/kept.txt')) === 'kept', 'file kept')
    return before
  })

  const snap = await step('createSnapshot, listSnapshots', async () => {
    const name = `snap-${label}`
    const snap = await a.createSnapshot({ name })
    check(snap.snapshotId.startsWith('snap') && JSON.stringify(snap.names) === JSON.stringify([name]), JSON.stringify(snap))
    check((await snapshotIds({ sandboxId: a.sandboxId })).includes(snap.snapshotId), 'listed for its sandbox (paged by 1)')
    const own = await a.listSnapshots().nextItems()
    check(own.some((s) => s.snapshotId === snap.snapshotId), 'instance listSnapshots')
    check(JSON.stringify(await snapshotIds({ name })) === JSON.stringify([snap.snapshotId]), 'listed by name')
    return snap
  })

  await step('Sandbox.create(snapshot id): a new sandbox, still counting, with the file', async () => {
    const c = await Sandbox.create(snap.snapshotId, { timeoutMs: 300_000 })
    made.push(c)
    check(c.sandboxId !== a.sandboxId, 'a new sandbox')
    check((await hostname(c)) !== (await hostname(a)), 'another hostname')
    check((await count(c)) >= before, 'counter restored from the snapshot')
    await counting(c, 'the restored sandbox')
    check((await c.files.read('/home/user/kept.txt')) === 'kept', 'file in the restored sandbox')
    await c.kill()
  })

  await step('fork({ count: 2 }): two running copies, each counting', async () => {
    const forks = await a.fork({ count: 2, timeoutMs: 300_000 })
    made.push(...forks.filter((f) => f instanceof Sandbox))
    check(forks.length === 2 && forks.every((f) => f instanceof Sandbox), `forks ${forks}`)
    const ids = new Set([a.sandboxId, ...forks.map((f) => f.sandboxId)])
    check(ids.size === 3, `distinct ids ${[...ids]}`)
    for (const f of forks) {
      await counting(f, `fork ${f.sandboxId}`)
      check((await f.files.read('/home/user/kept.txt')) === 'kept', 'file in the fork')
    }
  })

  await step('deleteSnapshot', async () => {
    check((await Sandbox.deleteSnapshot(snap.snapshotId)) === true, 'deleted')
    check((await Sandbox.deleteSnapshot(snap.snapshotId)) === false, 'second delete is false')
    check(!(await snapshotIds({})).includes(snap.snapshotId), 'no longer listed')
    await rejects(SandboxError, () => Sandbox.create(snap.snapshotId), 'create from a deleted snapshot')
  })
} finally {
  for (const s of made) await Sandbox.kill(s.sandboxId)
}
