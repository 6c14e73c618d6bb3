// PTYs through the JS SDK: sandbox.pty.create, sendInput, resize, connect, kill.

import { CommandExitError, Sandbox } from 'e2b'
import { check, rejects, sleep, step } from './common.mjs'

const sbx = await Sandbox.create({ timeoutMs: 300_000 })
const enc = new TextEncoder()
const dec = new TextDecoder()
try {
  await step('interactive shell on a PTY', async () => {
    let text = ''
    const h = await sbx.pty.create({ cols: 80, rows: 24, envs: { WHO: 'pty' }, onData: (d) => { text += dec.decode(d) } })
    await sbx.pty.sendInput(h.pid, enc.encode('echo hello-$WHO-$((20+22)); tty; stty size\n'))
    const until = Date.now() + 20_000
    while (!text.includes('24 80') && Date.now() < until) await sleep(100)
    await sbx.pty.resize(h.pid, { cols: 120, rows: 40 })
    await sbx.pty.sendInput(h.pid, enc.encode('stty size; exit 0\n'))
    const r = await h.wait()
    check(r.exitCode === 0, `exit ${r.exitCode}`)
    check(text.includes('hello-pty-42') && text.includes('/dev/pts/'), text)
    check(text.includes('24 80') && text.includes('40 120'), text)
  })

  await step('reconnect to a PTY and kill it', async () => {
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} })
    let text = ''
    await sbx.pty.connect(h.pid, { onData: (d) => { text += dec.decode(d) } })
    await sbx.pty.sendInput(h.pid, enc.encode('echo marker-$((6*7))\n'))
    const until = Date.now() + 20_000
    while (!text.includes('marker-42') && Date.now() < until) await sleep(100)
    check(text.includes('marker-42'), text)
    check((await sbx.pty.kill(h.pid)) === true, 'kill')
    const e = await rejects(CommandExitError, () => h.wait(), 'killed PTY')
    check(e.exitCode === -1, `exit ${e.exitCode}`)
  })
} finally {
  await Sandbox.kill(sbx.sandboxId)
}
