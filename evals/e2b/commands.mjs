// Processes through the JS SDK: commands.run in the foreground and background, callbacks,
// exit codes and CommandExitError, envs, cwd, user, timeouts, kill, stdin, list and connect, a
// process killed by a signal, and a sandbox killed while a command streams.

import { CommandExitError, InvalidArgumentError, Sandbox, SandboxError, TimeoutError } from 'e2b'
import { check, rejects, sleep, step } from './common.mjs'

const sbx = await Sandbox.create({ timeoutMs: 300_000 })
try {
  await step('foreground run with callbacks', async () => {
    const out = []
    const err = []
    const r = await sbx.commands.run('echo one; echo two >&2; node -e "console.log(1+1)"', {
      onStdout: (d) => out.push(d),
      onStderr: (d) => err.push(d),
    })
    check(r.exitCode === 0 && r.stdout === 'one\n2\n' && r.stderr === 'two\n', JSON.stringify(r))
    check(out.join('') === r.stdout && err.join('') === r.stderr, 'callbacks')
  })

  await step('non-zero exit, signal, bad cwd', async () => {
    const e = await rejects(CommandExitError, () => sbx.commands.run('echo partial; exit 3'), 'exit 3')
    check(e.exitCode === 3 && e.stdout === 'partial\n' && e.error === 'exit status 3', `${e.exitCode} ${e.error}`)
    const k = await rejects(CommandExitError, () => sbx.commands.run('kill -9 $$'), 'signal')
    check(k.exitCode === -1 && k.error === 'signal: killed', `${k.exitCode} ${k.error}`)
    await rejects(InvalidArgumentError, () => sbx.commands.run('pwd', { cwd: '/no/such/dir' }), 'bad cwd')
  })

  await step('envs, cwd, user', async () => {
    const r = await sbx.commands.run('echo $FOO; pwd; whoami', { envs: { FOO: 'bar' }, cwd: '/tmp', user: 'root' })
    check(r.stdout === 'bar\n/tmp\nroot\n', r.stdout)
  })

  await step('timeout', async () => {
    const started = Date.now()
    await rejects(TimeoutError, () => sbx.commands.run('sleep 30', { timeoutMs: 2_000 }), 'timeout')
    check(Date.now() - started < 15_000, 'prompt')
  })

  await step('background, list, connect, kill', async () => {
    const h = await sbx.commands.run('for i in 1 2 3; do echo tick $i; sleep 1; done; sleep 100', { background: true })
    const procs = await sbx.commands.list()
    const p = procs.find((x) => x.pid === h.pid)
    check(p && p.cmd === '/bin/bash' && p.args.at(-1).startsWith('for i'), JSON.stringify(procs))
    let seen = ''
    const attached = await sbx.commands.connect(h.pid, { onStdout: (d) => { seen += d } })
    const until = Date.now() + 20_000
    while (!seen.includes('tick 3') && Date.now() < until) await sleep(200)
    check(seen.includes('tick 3'), `connected output ${seen}`)
    check((await sbx.commands.kill(h.pid)) === true, 'kill')
    const e = await rejects(CommandExitError, () => attached.wait(), 'killed')
    check(e.error === 'signal: killed', `${e.error}`)
    check((await sbx.commands.kill(h.pid)) === false, 'killing a dead process is false')
  })

  await step('stdin: send and close', async () => {
    const h = await sbx.commands.run('read line; echo got:$line', { background: true, stdin: true })
    await sbx.commands.sendStdin(h.pid, 'hello\n')
    check((await h.wait()).stdout === 'got:hello\n', 'sendStdin')
    const c = await sbx.commands.run('wc -c', { background: true, stdin: true })
    await sbx.commands.sendStdin(c.pid, 'abcd')
    await sbx.commands.closeStdin(c.pid)
    check((await c.wait()).stdout.trim() === '4', 'closeStdin')
  })

  await step('sandbox killed while a command streams', async () => {
    const h = await sbx.commands.run('echo started; sleep 120', { background: true })
    setTimeout(() => Sandbox.kill(sbx.sandboxId), 2_000)
    const started = Date.now()
    const e = await rejects(SandboxError, () => h.wait(), 'wait on a killed sandbox')
    check(Date.now() - started < 30_000, `prompt: ${e.message}`)
    check(e instanceof TimeoutError && /killed/.test(e.message), `the SDK says the sandbox was killed: ${e.message}`)
    check(!(await sbx.isRunning()), 'gone')
  })
} finally {
  await Sandbox.kill(sbx.sandboxId)
}
