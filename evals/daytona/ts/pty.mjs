// PTY over WebSocket: the exit-control subprotocol must be echoed or Node's `ws` refuses the
// handshake. Create with env and size, type, resize, list, reconnect, exit code, kill.
import { check, client, run, sleep } from './common.mjs'

async function until(get, needle, ms = 20000) {
  const end = Date.now() + ms
  while (!get().includes(needle) && Date.now() < end) await sleep(100)
  return get()
}

await run('typescript pty', async () => {
  const d = client()
  const s = await d.create()
  try {
    const p = s.process
    let out = ''
    const h = await p.createPty({ id: 'tty', cols: 90, rows: 20, envs: { TV: 'yes' }, onData: (b) => (out += Buffer.from(b).toString()) })
    await h.sendInput('echo $TV $(stty size)\n')
    check((await until(() => out, 'yes 20 90')).includes('yes 20 90'), 'env and size', out.slice(-200))
    const info = await h.resize(120, 40)
    check(info.cols === 120 && info.rows === 40, 'resize', info)
    check((await p.listPtySessions()).some((x) => x.id === 'tty' && x.active), 'list')
    await h.disconnect()
    let again = ''
    const h2 = await p.connectPty('tty', { onData: (b) => (again += Buffer.from(b).toString()) })
    await h2.sendInput('echo back\n')
    check((await until(() => again, 'back')).includes('back'), 'reconnect')
    await h2.sendInput('exit 5\n')
    const r = await h2.wait()
    check(r.exitCode === 5, 'exit code', r)
    const k = await p.createPty({ id: 'k', onData: () => {} })
    await k.kill()
    const kr = await k.wait()
    check(kr.exitCode !== 0, 'killed', kr)
  } finally {
    await d.delete(s)
  }
})
