// Warm pools through the TypeScript SDK: daytona.warmPool.create({ snapshot: 'base', pool: 1 })
// (it fills in the background until currentSize is 1), list, a create that claims the warm
// sandbox (started, the caller's env, its own hostname), the pool refilling, update (0 drains
// it), delete, and the errors for a pool that is gone.
import { check, client, expectError, run, sdk, sleep } from './common.mjs'

// Waits until the pool has `n` warm sandboxes; returns it.
async function waitSize(d, id, n) {
  for (let i = 0; i < 600; i++) {
    const p = (await d.warmPool.list()).find((x) => x.id === id)
    if (p && p.currentSize === n) return p
    await sleep(500)
  }
  throw new Error(`pool ${id} never had ${n} warm sandboxes`)
}

await run('typescript warm pools', async () => {
  const d = client()
  await expectError(() => d.warmPool.create({ snapshot: 'no-such-snapshot', pool: 1 }), sdk.DaytonaNotFoundError, 'unknown snapshot')
  const pool = await d.warmPool.create({ snapshot: 'base', pool: 1 })
  try {
    check(pool.snapshot === 'base' && pool.pool === 1 && pool.id.startsWith('pool'), 'created', pool)
    check((await d.warmPool.list()).some((p) => p.id === pool.id), 'listed')
    await waitSize(d, pool.id, 1)

    const started = Date.now()
    const s = await d.create({ envVars: { WHO: 'warm' }, labels: { flow: 'pools' } })
    const claimedIn = Date.now() - started
    try {
      check(s.state === 'started', 'claimed sandbox started', s.state)
      check((await s.process.executeCommand('echo $WHO')).result.trim() === 'warm', "the caller's env")
      check((await s.process.executeCommand('hostname')).result.trim() === s.id, 'its own hostname')
      console.log(`  (claim took ${claimedIn} ms over the SDK)`)
    } finally {
      await d.delete(s)
    }
    await waitSize(d, pool.id, 1)

    const resized = await d.warmPool.update(pool.id, { pool: 0 })
    check(resized.pool === 0, 'resized to 0', resized)
    await waitSize(d, pool.id, 0)
  } finally {
    await d.warmPool.delete(pool.id)
  }
  check(!(await d.warmPool.list()).some((p) => p.id === pool.id), 'deleted')
  await expectError(() => d.warmPool.update(pool.id, { pool: 1 }), sdk.DaytonaNotFoundError, 'update of a deleted pool')
})
