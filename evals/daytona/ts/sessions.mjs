// Sessions: state across commands, sync and async exec, status, logs (plain and streamed over
// the WebSocket with the 01/02 markers), input, delete.
import { check, client, expectError, run, sdk, sleep } from './common.mjs'

await run('typescript sessions', async () => {
  const d = client()
  const s = await d.create()
  try {
    const p = s.process
    await p.createSession('ts')
    await p.executeSessionCommand('ts', { command: 'cd /tmp && export K=v' })
    let r = await p.executeSessionCommand('ts', { command: 'pwd; echo $K; echo e >&2; false' })
    check(r.stdout === '/tmp\nv\n' && r.stderr === 'e\n' && r.exitCode === 1, 'sync exec keeps state', r)
    r = await p.executeSessionCommand('ts', { command: 'for i in 1 2; do echo o$i; echo e$i >&2; sleep 1; done', runAsync: true })
    check(r.cmdId && r.exitCode === undefined, 'async exec', r)
    let out = ''
    let err = ''
    await p.getSessionCommandLogs('ts', r.cmdId, (c) => (out += c), (c) => (err += c))
    check(out === 'o1\no2\n' && err === 'e1\ne2\n', 'streamed logs', [out, err])
    check((await p.getSessionCommand('ts', r.cmdId)).exitCode === 0, 'status after finish')
    const logs = await p.getSessionCommandLogs('ts', r.cmdId)
    check(logs.stdout === 'o1\no2\n' && logs.stderr === 'e1\ne2\n', 'plain logs', logs)
    r = await p.executeSessionCommand('ts', { command: 'read -r x; echo got:$x', runAsync: true })
    await sleep(500)
    await p.sendSessionCommandInput('ts', r.cmdId, 'in\n')
    for (let i = 0; i < 100 && (await p.getSessionCommand('ts', r.cmdId)).exitCode == null; i++) await sleep(100)
    check((await p.getSessionCommandLogs('ts', r.cmdId)).stdout === 'got:in\n', 'input')
    check((await p.listSessions()).map((x) => x.sessionId).includes('ts'), 'list')
    await p.deleteSession('ts')
    await expectError(() => p.getSession('ts'), sdk.DaytonaNotFoundError, 'deleted session')
  } finally {
    await d.delete(s)
  }
})
