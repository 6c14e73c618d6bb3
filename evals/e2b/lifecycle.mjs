// Control plane through the JS SDK: create (metadata, envs, timeout), getInfo, list (metadata and
// state filters, paging), updateNetwork (egress rules at runtime), connect, setTimeout, getMetrics, pause and resume via connect, kill,
// expiry, and the errors for a bad key, an unknown template and a bad timeout.

import { AuthenticationError, Sandbox, SandboxError, SandboxNotFoundError } from 'e2b'
import { check, rejects, step, tag, waitUntil } from './common.mjs'

const label = tag()

async function listed(query, limit) {
  const paginator = Sandbox.list({ query, limit })
  let pages = 0
  const items = []
  while (paginator.hasNext) {
    items.push(...(await paginator.nextItems()))
    pages += 1
  }
  return { pages, items }
}

const a = await step('create two sandboxes', async () =>
  Sandbox.create({ timeoutMs: 300_000, metadata: { flow: label, n: '1' }, envs: { GREETING: 'hello' } }))
const b = await Sandbox.create({ timeoutMs: 300_000, metadata: { flow: label, n: '2' } })
try {
  await step('getInfo', async () => {
    const info = await a.getInfo()
    check(info.sandboxId === a.sandboxId && /^[a-z0-9]+$/.test(info.sandboxId), 'id')
    check(info.state === 'running', `state ${info.state}`)
    check(info.metadata.flow === label && info.templateId === 'base', JSON.stringify(info))
    check(info.cpuCount >= 1 && info.memoryMB >= 128 && info.endAt > info.startedAt, 'resources and times')
    check((await a.commands.run('echo $GREETING')).stdout === 'hello\n', 'sandbox envs')
  })

  await step('list: metadata filter and paging', async () => {
    const { pages, items } = await listed({ metadata: { flow: label } }, 1)
    const ids = items.map((s) => s.sandboxId).sort()
    check(JSON.stringify(ids) === JSON.stringify([a.sandboxId, b.sandboxId].sort()), `listed ${ids}`)
    check(pages >= 2, `${pages} pages`)
  })

  await step('updateNetwork: egress rules replaced at runtime', async () => {
    const policy = async () => {
      const r = await fetch(`${process.env.E2B_API_URL.replace(/\/$/, '')}/v1/sandboxes/${a.sandboxId}/egress-policy`, {
        headers: { 'X-API-Key': process.env.E2B_API_KEY },
      })
      check(r.ok, `egress-policy: HTTP ${r.status}`)
      return r.json()
    }
    await a.updateNetwork({ denyOut: ['0.0.0.0/0'], allowOut: ['203.0.113.9'] })
    let got = await policy()
    check(got.default === 'deny' && got.allow.join() === '203.0.113.9' && got.deny.length === 0, JSON.stringify(got))
    await a.updateNetwork({ denyOut: ['192.0.2.0/24'] })
    got = await policy()
    check(got.default === 'allow' && got.allow.length === 0 && got.deny.join() === '192.0.2.0/24', JSON.stringify(got))
    await a.updateNetwork({ denyOut: ['0.0.0.0/0'], allowOut: ['api.example.com', '*.example.org'] })
    const named = await policy()
    check(named.default === 'deny' && named.allow.join() === 'api.example.com,*.example.org', `domain rules: ${JSON.stringify(named)}`)
    await rejects(SandboxError, () => a.updateNetwork({ allowOut: ['localhost'] }), 'a bad entry')
    check((await policy()).allow.join() === 'api.example.com,*.example.org', 'a refused update changes nothing')
    await a.updateNetwork({ denyOut: ['192.0.2.0/24'] })
  })

  await step('connect, setTimeout, getMetrics', async () => {
    const again = await Sandbox.connect(a.sandboxId)
    check((await again.commands.run('echo $GREETING')).stdout === 'hello\n', 'connected instance works')
    const before = (await a.getInfo()).endAt
    await a.setTimeout(600_000)
    check((await a.getInfo()).endAt > before, 'endAt moved')
    const metrics = await a.getMetrics()
    check(metrics.length >= 1 && metrics[0].memTotal > 0 && metrics[0].cpuCount >= 1, JSON.stringify(metrics))
    // A history (a sample every 5 s), answered for the range asked.
    await waitUntil(async () => (await a.getMetrics()).length >= 2, 'a second metrics sample')
    const future = await a.getMetrics({ start: new Date(Date.now() + 3_600_000) })
    check(future.length === 0, JSON.stringify(future))
  })

  await step('pause, list as paused, resume by connect', async () => {
    await b.files.write('/home/user/state.txt', 'kept')
    check((await b.pause()) === true, 'pause')
    check(!(await b.isRunning()), 'paused sandbox does not run')
    const { items } = await listed({ metadata: { flow: label }, state: ['paused'] })
    check(items.length === 1 && items[0].sandboxId === b.sandboxId, 'listed as paused')
    const back = await Sandbox.connect(b.sandboxId, { timeoutMs: 300_000 })
    check(await back.isRunning(), 'resumed')
    check((await back.files.read('/home/user/state.txt')) === 'kept', 'state kept')
  })

  await step('kill', async () => {
    check((await a.kill()) === true, 'kill')
    check(!(await a.isRunning()), 'killed sandbox does not run')
    check((await Sandbox.kill(a.sandboxId)) === false, 'second kill is false')
    await rejects(SandboxNotFoundError, () => Sandbox.getInfo(a.sandboxId), 'getInfo after kill')
  })

  await step('timeout expiry kills', async () => {
    await b.setTimeout(3_000)
    await waitUntil(async () => !(await b.isRunning()), 'expiry', 40_000)
    await rejects(SandboxNotFoundError, () => b.getInfo(), 'expired sandbox is gone')
  })

  await step('errors: bad key, unknown template, bad timeout', async () => {
    await rejects(AuthenticationError, () => Sandbox.create({ apiKey: 'e2b_wrong' }), 'bad key')
    const e = await rejects(SandboxError, () => Sandbox.create('no-such-template'), 'template')
    check(e.message.includes('not found'), e.message)
    await rejects(SandboxError, () => Sandbox.create({ timeoutMs: -1000 }), 'negative timeout')
  })
} finally {
  await Sandbox.kill(a.sandboxId)
  await Sandbox.kill(b.sandboxId)
}
