// Volumes through the JS SDK: Volume.create; the content API on the detached volume (writeFile,
// a nested file, list, getInfo, exists, readFile, makeDir, updateMetadata, remove; bad paths and
// a wrong token refused); Sandbox.create({ volumeMounts: { '/data': vol } }) reads the files
// written through the API, writes one as the default user, and the content API reads and writes
// through the running sandbox; then the sandbox is killed, a second sandbox mounting the same
// volume by name at another path reads the files back, Volume.getInfo / list; while a sandbox
// has it mounted read-write, mounting it into another sandbox and destroying it are refused
// (409); once it is free the content API reads the guest's file from the image; Volume.destroy
// (then gone: a second destroy is false).

import {
  AuthenticationError,
  Sandbox,
  SandboxError,
  Volume,
  VolumeError,
  VolumeNotFoundError,
  VolumePathNotFoundError,
} from 'e2b'
import { check, rejects, step, tag } from './common.mjs'

const label = tag()
const name = `vol-${label}`
const TEXT = 'persisted across sandboxes\n'
const API_TEXT = 'written through the content API\n'
const NESTED = '/deep/er/nested file.txt'
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b)

let vol = await step('Volume.create', async () => {
  const vol = await Volume.create(name)
  check(vol.name === name && vol.volumeId, `created ${vol.volumeId} ${vol.name}`)
  await rejects(VolumeError, () => Volume.create(name), 'a second volume of the same name')
  return vol
})

await step('content API on the detached volume: write, list, stat, read, mkdir, chmod, remove', async () => {
  check((vol.token ?? '').length === 64, `a volume token: ${vol.token}`)
  const f = await vol.writeFile('/notes/api.txt', API_TEXT)
  check(
    same([f.type, f.path, f.size, f.uid, f.gid, f.mode], ['file', '/notes/api.txt', API_TEXT.length, 1000, 1000, 0o644]),
    `written ${JSON.stringify(f)}`,
  )
  await vol.writeFile(NESTED, new TextEncoder().encode('nested\0bytes').buffer)
  const top = Object.fromEntries((await vol.list('/')).map((e) => [e.name, e.type]))
  check(top.notes === 'directory' && top.deep === 'directory', `listed / ${JSON.stringify(top)}`)
  const deep = (await vol.list('/deep', { depth: 2 })).map((e) => e.path)
  check(same(deep, ['/deep/er', NESTED]), `listed /deep two deep: ${JSON.stringify(deep)}`)
  check((await vol.getInfo('/notes/api.txt')).size === API_TEXT.length, 'getInfo of the file')
  check((await vol.exists(NESTED)) && !(await vol.exists('/nope')), 'exists')
  check((await vol.readFile('/notes/api.txt')) === API_TEXT, 'read back as text')
  const bytes = await vol.readFile(NESTED, { format: 'bytes' })
  check(new TextDecoder().decode(bytes) === 'nested\0bytes', 'read back as bytes')
  const d = await vol.makeDir('/made/sub', { force: true })
  check(d.type === 'directory' && d.path === '/made/sub' && d.uid === 1000, `makeDir ${JSON.stringify(d)}`)
  check((await vol.updateMetadata('/made', { mode: 0o700 })).mode === 0o700, 'updateMetadata mode')
  await vol.remove('/made')
  check(!(await vol.exists('/made/sub')) && !(await vol.exists('/made')), 'removed with its contents')
  await rejects(VolumePathNotFoundError, () => vol.readFile('/made/sub/x'), 'reading a removed path')
  const e = await rejects(VolumeError, () => vol.readFile('/notes/../../etc/passwd'), 'a path with ..')
  check(e.message.startsWith('400'), `a 400: ${e.message}`)
  const stranger = new Volume(vol.volumeId, name, '0'.repeat(64))
  await rejects(AuthenticationError, () => stranger.list('/'), 'a wrong volume token')
})

const made = []
try {
  await step('mount it at /data: the API\'s files are there; write one as the default user; the API reads and writes through the sandbox; kill it', async () => {
    const a = await Sandbox.create({ volumeMounts: { '/data': vol }, timeoutMs: 300_000, metadata: { flow: label } })
    made.push(a)
    const mounts = (await a.getInfo()).volumeMounts
    check(same(mounts, [{ name, path: '/data' }]), `getInfo reports the mount: ${JSON.stringify(mounts)}`)
    let got = (await a.commands.run('cat /data/notes/api.txt')).stdout
    check(got === API_TEXT, `the sandbox reads the file written through the API: ${JSON.stringify(got)}`)
    got = (await a.commands.run(`stat -c %s:%U '/data${NESTED}'`)).stdout.trim()
    check(got === '12:user', `and the nested one, owned by the default user: ${got}`)
    await a.files.write('/data/notes/hello.txt', TEXT)
    const owner = (await a.commands.run('stat -c %U /data/notes/hello.txt && sync')).stdout.trim()
    check(owner === 'user', `written by the default user, not ${owner}`)
    check((await vol.readFile('/notes/hello.txt')) === TEXT, 'the API reads the sandbox\'s file while mounted')
    const names = (await vol.list('/notes')).map((e) => e.name).sort()
    check(same(names, ['api.txt', 'hello.txt']), `listed while mounted: ${JSON.stringify(names)}`)
    await vol.writeFile('/notes/live.txt', 'live')
    got = (await a.commands.run('cat /data/notes/live.txt && sync')).stdout
    check(got === 'live', `the sandbox sees a file the API wrote while mounted: ${JSON.stringify(got)}`)
    await a.kill()
    made.splice(made.indexOf(a), 1)
  })

  const b = await step('a second sandbox mounts it by name at /mnt/shared and reads the file', async () => {
    const b = await Sandbox.create({ volumeMounts: { '/mnt/shared': name }, timeoutMs: 300_000, metadata: { flow: label } })
    made.push(b)
    const got = await b.files.read('/mnt/shared/notes/hello.txt')
    check(got === TEXT, `the file outlived the first sandbox: ${JSON.stringify(got)}`)
    check(same((await b.getInfo()).volumeMounts, [{ name, path: '/mnt/shared' }]), 'the second mount')
    const info = await Volume.getInfo(vol.volumeId)
    check(info.volumeId === vol.volumeId && info.name === name, `getInfo ${JSON.stringify(info)}`)
    check((await Volume.list()).some((v) => v.volumeId === vol.volumeId && v.name === name), 'listed')
    return b
  })

  await step('while mounted read-write: no second mount, no destroy (409)', async () => {
    const create = async () => made.push(await Sandbox.create({ volumeMounts: { '/data': vol }, timeoutMs: 60_000 }))
    let e = await rejects(SandboxError, create, 'a second mount')
    check(e.statusCode === 409, `a 409: ${e.statusCode} ${e.message}`)
    e = await rejects(VolumeError, () => Volume.destroy(vol.volumeId), 'destroying a mounted volume')
    check(e.message.startsWith('409'), `a 409: ${e.message}`)
  })

  await step('kill the second sandbox, read through the API, Volume.destroy: gone', async () => {
    await b.kill()
    made.splice(made.indexOf(b), 1)
    check((await vol.readFile('/notes/hello.txt')) === TEXT, 'the API reads the guest\'s file from the image')
    check((await Volume.destroy(vol.volumeId)) === true, 'destroyed')
    check((await Volume.destroy(vol.volumeId)) === false, 'a second destroy is false')
    await rejects(VolumeNotFoundError, () => Volume.getInfo(vol.volumeId), 'getInfo of a destroyed volume')
    check(!(await Volume.list()).some((v) => v.volumeId === vol.volumeId), 'no longer listed')
    vol = null
  })
} finally {
  for (const s of made) await Sandbox.kill(s.sandboxId)
  if (vol) await Volume.destroy(vol.volumeId)
}
