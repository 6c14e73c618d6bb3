// Volumes through the TypeScript SDK: daytona.volume.get(name, true) (a not-found error before),
// create({ volumes: [{ volumeId, mountPath: '/data' }] }) and a file written there as the default
// user, the sandbox deleted; a second sandbox mounting the volume by name at another path reads
// the file back and reports the mount; volume.list; while a sandbox has it mounted read-write,
// mounting it into another sandbox and deleting it are conflicts (409); a subpath is refused
// (400); volume.delete once it is free (then not found).
import { check, client, deleteAll, expectError, run, sdk } from './common.mjs'

const TEXT = 'persisted across sandboxes\n'
const mounted = (s) => JSON.stringify((s.volumes ?? []).map((v) => [v.volumeId, v.mountPath]))

await run('typescript volumes', async () => {
  const d = client()
  const name = `vol-ts-${Date.now()}`
  await expectError(() => d.volume.get(name), sdk.DaytonaNotFoundError, 'a volume not made yet')
  let vol = await d.volume.get(name, true)
  check(vol.name === name && vol.id && vol.state === 'ready', 'volume.get(name, true)', vol)
  check((await d.volume.get(name, true)).id === vol.id, 'a second get(name, true) finds it')
  const made = []
  const create = async (volumeId, mountPath, mount = {}) => {
    const s = await d.create({ volumes: [{ volumeId, mountPath, ...mount }] })
    made.push(s)
    return s
  }
  try {
    const a = await create(vol.id, '/data')
    check(mounted(a) === JSON.stringify([[vol.id, '/data']]), 'the sandbox reports its volume', mounted(a))
    await a.fs.uploadFile(Buffer.from(TEXT), '/data/hello.txt')
    const r = await a.process.executeCommand('stat -c %U /data/hello.txt && sync')
    check(r.exitCode === 0 && r.result.trim() === 'user', 'written by the default user', r.result)
    await d.delete(a)

    const b = await create(name, '/mnt/shared')
    const got = (await b.fs.downloadFile('/mnt/shared/hello.txt')).toString()
    check(got === TEXT, 'the file outlived the first sandbox', got)
    check(mounted(await d.get(b.id)) === JSON.stringify([[vol.id, '/mnt/shared']]), 'get reports the mount')
    check((await d.volume.list()).some((v) => v.id === vol.id), 'volume.list')

    await expectError(() => create(vol.id, '/data'), sdk.DaytonaConflictError, 'a second mount while mounted read-write')
    await expectError(() => d.volume.delete(vol), sdk.DaytonaConflictError, 'deleting a mounted volume')
    const e = await expectError(() => create(vol.id, '/data', { subpath: 'users/alice' }), sdk.DaytonaBadRequestError, 'a subpath')
    check(e.message.includes('subpath'), 'the refusal names the subpath', e.message)

    await d.delete(b)
    await d.volume.delete(vol)
    await expectError(() => d.volume.get(name), sdk.DaytonaNotFoundError, 'the deleted volume')
    check(!(await d.volume.list()).some((v) => v.id === vol.id), 'gone from volume.list')
    vol = null
  } finally {
    await deleteAll(d, made)
    if (vol) await d.volume.delete(vol)
  }
})
