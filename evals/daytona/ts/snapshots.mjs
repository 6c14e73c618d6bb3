// Snapshots of sandboxes, fork and pause through the TypeScript SDK, proven by a background
// counter: sandbox.createSnapshot(name), the snapshot under daytona.snapshot, create({ snapshot })
// (a new sandbox, another hostname, the counter still counting, the file there), sandbox.fork(),
// pause and start (the counter goes on), and deleting the snapshot.
import { check, client, deleteAll, expectError, run, sdk, sleep } from './common.mjs'

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
const KEPT = '/home/user/kept.txt'

const count = async (s) => Number((await s.fs.downloadFile('/tmp/count')).toString())
const hostname = async (s) => (await s.process.executeCommand('hostname')).result.trim()

// Waits until the counter in `s` moves on.
async function counting(s, what) {
  const start = await count(s)
  for (let i = 0; i < 60; i++) {
    if ((await count(s)) > start) return
    await sleep(500)
  }
  throw new Error(`the counter stood still at ${start} in ${what}`)
}

async function startCounter(s) {
  await s.fs.uploadFile(Buffer.from(COUNTER_SCRIPT), COUNTER)
  await s.process.executeCommand(`nohup python3 ${COUNTER} > /dev/null 2>&1 &`)
  for (let i = 0; i < 60; i++) {
    const r = await s.process.executeCommand('cat /tmp/count 2>/dev/null || echo 0')
    if (!['', '0'].includes(r.result.trim())) return
    await sleep(500)
  }
  throw new Error('the counter did not start')
}

await run('typescript snapshots', async () => {
  const d = client()
  const name = `snap-ts-${Date.now()}`
  const a = await d.create({ labels: { flow: 'snapshots' }, autoStopInterval: 0 })
  const made = [a]
  try {
    await startCounter(a)
    await a.fs.uploadFile(Buffer.from('kept'), KEPT)

    const before = await count(a)
    await a.createSnapshot(name)
    check(a.state === 'started', 'the source runs on after a snapshot', a.state)
    const snap = await d.snapshot.get(name)
    check(snap.name === name && snap.state === 'active' && !snap.general, 'snapshot.get', snap)
    check((await d.snapshot.list()).items.some((x) => x.name === name), 'listed with the templates')

    const c = await d.create({ snapshot: name })
    made.push(c)
    check(c.id !== a.id && c.state === 'started', 'restored into a new started sandbox', c.state)
    check((await hostname(c)) !== (await hostname(a)), 'another hostname')
    check((await count(c)) >= before, 'counter restored from the snapshot')
    await counting(c, 'the restored sandbox')
    check((await c.fs.downloadFile(KEPT)).toString() === 'kept', 'file in the restored sandbox')
    await d.delete(c)

    const f = await a.fork({ name: `fork-${a.id}` })
    made.push(f)
    check(f.id !== a.id && f.state === 'started', 'fork started', f.state)
    check(f.name === `fork-${a.id}`, 'fork named', f.name)
    await counting(f, 'the fork')
    await d.delete(f)

    const paused = await count(a)
    await a.pause()
    check(a.state === 'stopped', 'paused to disk reads stopped', a.state)
    await a.start()
    check(a.state === 'started', 'started again', a.state)
    check((await count(a)) >= paused, 'counter kept its value over pause and start')
    await counting(a, 'the sandbox started after pause')

    await d.snapshot.delete(snap)
    await expectError(() => d.snapshot.get(name), sdk.DaytonaNotFoundError, 'deleted snapshot')
  } finally {
    await deleteAll(d, made)
  }
})
