// Template builds through the JS SDK: Template.build of a Python image with apt and pip packages,
// a copied file and a start command (its logs stream back; a sandbox of it has the packages, the
// file, and the server the start command started), an identical rebuild served from the cache,
// buildInBackground + getBuildStatus of a build whose last step changed (only that step runs), a
// failing step (BuildError naming the step and its exit code, and no template left),
// Template.exists, and deletion. On a server whose sandboxes have no internet (test servers run
// without a network), the apt and pip steps are replaced by two RUN steps that need none.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { BuildError, Sandbox, Template, waitForPort } from 'e2b'
import { check, rejects, sleep, step, tag, waitUntil } from './common.mjs'

const label = tag()
const name = `flow-${label}`
const failing = `${name}-fail`
const api = process.env.E2B_API_URL.replace(/\/+$/, '')
const headers = { 'X-API-KEY': process.env.E2B_API_KEY }
const page = `<h1>${label}</h1>\n`
const context = mkdtempSync(path.join(tmpdir(), 'e2b-template-flow-'))
writeFileSync(path.join(context, 'index.html'), page)
const STEP_LINE = /^\[(\d+)\/(\d+)\] /
// Reachability only (-k): a host behind a TLS-inspecting proxy hands its CA to builds, not sandboxes.
const ONLINE_CHECK = 'curl -sk -o /dev/null -m 15 https://pypi.org/simple/six/ && echo online || true'

const online = await step('do sandboxes reach the internet?', async () => {
  const probe = await Sandbox.create({ timeoutMs: 120_000 })
  const reached = (await probe.commands.run(ONLINE_CHECK)).stdout.trim() === 'online'
  await probe.kill()
  console.log(`    ${reached ? 'online: apt and pip steps' : 'offline: RUN steps instead of apt and pip'}`)
  if (process.env.E2B_FLOW_ONLINE === '1' && !reached) {
    throw new Error('sandboxes must reach the internet (E2B_FLOW_ONLINE=1: the apt and pip steps must run)')
  }
  return reached
})

function template(extraCmd) {
  let t = Template({ fileContextPath: context }).fromPythonImage('3.11')
  t = online
    ? t.aptInstall(['jq']).pipInstall(['six'])
    : t.runCmd('mkdir -p /opt/flow && echo root > /opt/flow/by', { user: 'root' }).runCmd('echo user > /home/user/by')
  t = t.copy('index.html', '/home/user/site/index.html')
  if (extraCmd) t = t.runCmd(extraCmd)
  return t.setStartCmd('cd /home/user/site && python3 -m http.server 8080', waitForPort(8080))
}

// The server's `[i/n] ...` lines, by step number.
function stepLines(messages) {
  const lines = {}
  for (const m of messages) {
    const match = STEP_LINE.exec(m)
    if (match) (lines[match[1]] ??= []).push(m)
  }
  return lines
}

// Template.build, returning the log messages it streamed and how long it took (seconds).
async function build(t, templateName, opts = {}) {
  const messages = []
  const started = Date.now()
  await Template.build(t, templateName, { ...opts, onBuildLogs: (e) => messages.push(e.message) })
  return { messages, took: (Date.now() - started) / 1000 }
}

const served = async (sandbox) => (await sandbox.commands.run('curl -s localhost:8080/index.html')).stdout
const size = { cpuCount: 1, memoryMB: 512 }

const made = []
let deleted
try {
  await step('Template.build: apt, pip, copy, start command; logs stream back', async () => {
    check(!(await Template.exists(name)), 'the name is free before the build')
    const { messages, took } = await build(template(), name, size)
    console.log(`    first build took ${took.toFixed(0)}s`)
    check(Object.keys(stepLines(messages)).join() === '1,2,3', `step lines: ${messages}`)
    check(messages.some((m) => m.includes('done in')), `steps ran: ${messages}`)
  })

  await step('Template.exists', async () => {
    check(await Template.exists(name), 'built template exists')
    check(!(await Template.exists(`nosuch-${label}`)), 'unknown name does not exist')
  })

  await step('Sandbox.create(<template>): packages (or files), file and the start command\'s server', async () => {
    const s = await Sandbox.create(name, { timeoutMs: 300_000 })
    made.push(s)
    if (online) {
      check((await s.commands.run('jq --version')).stdout.startsWith('jq-'), 'jq installed')
      await s.commands.run('python3 -c "import six"')
    } else {
      check((await s.files.read('/opt/flow/by')).trim() === 'root', 'first RUN step\'s file')
      check((await s.files.read('/home/user/by')).trim() === 'user', 'second RUN step\'s file')
    }
    check((await s.files.read('/home/user/site/index.html')) === page, 'copied file')
    await waitUntil(async () => (await served(s)) === page, 'the start command\'s server', 60_000)
    await s.kill()
  })

  await step('identical rebuild: every step CACHED, none run', async () => {
    const { messages, took } = await build(template(), name, size)
    console.log(`    cached rebuild took ${took.toFixed(0)}s`)
    const lines = stepLines(messages)
    check(Object.keys(lines).join() === '1,2,3', `step lines: ${messages}`)
    check(Object.values(lines).flat().every((m) => m.includes('CACHED')), `all CACHED: ${messages}`)
    check(!messages.some((m) => m.includes('done in')), `no step ran: ${messages}`)
    check(took < 60, `a cached rebuild is fast (${took}s)`)
  })

  await step('buildInBackground + getBuildStatus: only the changed last step runs', async () => {
    const info = await Template.buildInBackground(template('echo changed > /home/user/changed'), name, size)
    check(info.templateId === name && info.buildId, JSON.stringify(info))
    const messages = []
    let offset = 0
    let status
    const deadline = Date.now() + 1_800_000
    while (Date.now() < deadline) {
      status = await Template.getBuildStatus(info, { logsOffset: offset })
      offset += status.logEntries.length
      messages.push(...status.logEntries.map((e) => e.message))
      if ((status.status === 'ready' || status.status === 'error') && status.logEntries.length === 0) break
      await sleep(1000)
    }
    check(status?.status === 'ready', `status ${JSON.stringify(status)}`)
    const lines = stepLines(messages)
    check(Object.keys(lines).join() === '1,2,3,4', `step lines: ${messages}`)
    check([1, 2, 3].every((n) => lines[n].every((m) => m.includes('CACHED'))), `steps 1-3 CACHED: ${messages}`)
    check(lines[4].some((m) => m.includes('done in')) && !lines[4].some((m) => m.includes('CACHED')), `step 4 ran: ${lines[4]}`)
    const s = await Sandbox.create(name, { timeoutMs: 300_000 })
    made.push(s)
    check((await s.files.read('/home/user/changed')).trim() === 'changed', 'the new step\'s file')
    await s.kill()
  })

  await step('a failing step: BuildError naming the step and its exit code, no template', async () => {
    const bad = Template().fromBaseImage().runCmd('echo before').runCmd('exit 3')
    const e = await rejects(BuildError, () => Template.build(bad, failing), 'failing build')
    check(e.message.includes('step 2') && e.message.includes('3'), `message: ${e.message}`)
    check(!(await Template.exists(failing)), 'a failed build leaves no template')
  })
} finally {
  for (const s of made) await Sandbox.kill(s.sandboxId)
  rmSync(context, { recursive: true, force: true })
  deleted = await fetch(`${api}/templates/${name}`, { method: 'DELETE', headers })
  console.log(`  deleting the template: ${deleted.status}`)
}

await step('delete the template', async () => {
  check(deleted.status === 204, `delete: ${deleted.status} ${await deleted.text()}`)
  check(!(await Template.exists(name)), 'deleted template no longer exists')
})
