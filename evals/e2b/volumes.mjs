// Volumes through the JS SDK: Volume.create, Sandbox.create({ volumeMounts: { '/data': vol } })
// (a file written there as the default user, then the sandbox killed), a second sandbox mounting
// the same volume by name at another path reads the file back, Volume.getInfo / list; while a
// sandbox has it mounted read-write, mounting it into another sandbox and destroying it are
// refused (409); Volume.destroy once it is free (then gone: a second destroy is false).

import { Sandbox, SandboxError, Volume, VolumeError, VolumeNotFoundError } from 'e2b'
import { check, rejects, step, tag } from './common.mjs'

const label = tag()
const name = `vol-${label}`
const TEXT = 'persisted across sandboxes\n'
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b)

let vol = await step('Volume.create', async () => {
  const vol = await Volume.create(name)
  check(vol.name === name && vol.volumeId, `created ${vol.volumeId} ${vol.name}`)
  await rejects(VolumeError, () => Volume.create(name), 'a second volume of the same name')
  return vol
})

const made = []
try {
  await step('mount it at /data, write a file as the default user, kill the sandbox', async () => {
    const a = await Sandbox.create({ volumeMounts: { '/data': vol }, timeoutMs: 300_000, metadata: { flow: label } })
    made.push(a)
    const mounts = (await a.getInfo()).volumeMounts
    check(same(mounts, [{ name, path: '/data' }]), `getInfo reports the mount: ${JSON.stringify(mounts)}`)
    await a.files.write('/data/notes/hello.txt', TEXT)
    const owner = (await a.commands.run('stat -c %U /data/notes/hello.txt && sync')).stdout.trim()
    check(owner === 'user', `written by the default user, not ${owner}`)
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

  await step('kill the second sandbox, Volume.destroy: gone', async () => {
    await b.kill()
    made.splice(made.indexOf(b), 1)
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
