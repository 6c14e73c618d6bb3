// Files through the JS SDK: write and read (text, bytes, stream), multi-file write, list with
// depth, exists, getInfo, makeDir, rename, remove, file metadata (envd 0.6.2), signed download and
// upload URLs (routed by their signature), watchDir (streamed, recursive, with entries), paths
// that climb out of the home, an oversized upload and a missing file.

import { FileNotFoundError, FileType, FilesystemEventType, Sandbox, SandboxError } from 'e2b'
import { check, rejects, sleep, step, uploadLimit } from './common.mjs'

const sbx = await Sandbox.create({ timeoutMs: 300_000 })
try {
  await step('write and read text, bytes, stream', async () => {
    const info = await sbx.files.write('notes/hello.txt', 'héllo\n')
    check(info.path === '/home/user/notes/hello.txt' && info.name === 'hello.txt', JSON.stringify(info))
    check((await sbx.files.read('/home/user/notes/hello.txt')) === 'héllo\n', 'text')
    const blob = new Uint8Array(256 * 1000).map((_, i) => i % 256)
    await sbx.files.write('/home/user/blob.bin', blob.buffer)
    const back = await sbx.files.read('/home/user/blob.bin', { format: 'bytes' })
    check(back.length === blob.length && back.every((b, i) => b === blob[i]), 'bytes')
    const stream = await sbx.files.read('/home/user/blob.bin', { format: 'stream' })
    let n = 0
    for await (const chunk of stream) n += chunk.length
    check(n === blob.length, `stream ${n}`)
  })

  await step('multi-file write, list with depth, exists, getInfo', async () => {
    await sbx.files.write([
      { path: '/home/user/tree/a.txt', data: 'a' },
      { path: '/home/user/tree/sub/b.txt', data: 'bb' },
    ])
    const top = (await sbx.files.list('/home/user/tree')).map((e) => e.name).sort()
    check(JSON.stringify(top) === '["a.txt","sub"]', JSON.stringify(top))
    const deep = await sbx.files.list('/home/user/tree', { depth: 2 })
    check(deep.length === 3 && deep.find((e) => e.name === 'sub').type === FileType.DIR, JSON.stringify(deep))
    check((await sbx.files.exists('/home/user/tree/a.txt')) && !(await sbx.files.exists('/home/user/nope')), 'exists')
    const meta = await sbx.files.getInfo('/home/user/tree/sub/b.txt')
    check(meta.size === 2 && meta.owner === 'user' && meta.type === FileType.FILE, JSON.stringify(meta))
    // As envd: a link reports what it finally leads to, with an absolute target.
    await sbx.commands.run('ln -s ../../etc/hostname /home/user/link')
    const link = await sbx.files.getInfo('/home/user/link')
    check(link.type === FileType.FILE && link.symlinkTarget === '/etc/hostname', JSON.stringify(link))
  })

  await step('makeDir, rename, remove', async () => {
    check((await sbx.files.makeDir('/home/user/made/deep')) === true, 'created')
    check((await sbx.files.makeDir('/home/user/made/deep')) === false, 'exists already')
    const moved = await sbx.files.rename('/home/user/tree/a.txt', '/home/user/made/a2.txt')
    check(moved.path === '/home/user/made/a2.txt', JSON.stringify(moved))
    await sbx.files.remove('/home/user/tree')
    check(!(await sbx.files.exists('/home/user/tree')), 'removed')
  })

  await step('file metadata: set by writes, listed, kept by rename, cleared by overwrite', async () => {
    const w = await sbx.files.write('/home/user/meta.txt', 'v1', { metadata: { Owner: 'ada' } })
    check(JSON.stringify(w.metadata) === '{"owner":"ada"}', JSON.stringify(w))
    const info = await sbx.files.getInfo('/home/user/meta.txt')
    check(info.metadata?.owner === 'ada', JSON.stringify(info))
    const listed = (await sbx.files.list('/home/user')).find((e) => e.name === 'meta.txt')
    check(listed.metadata?.owner === 'ada', JSON.stringify(listed))
    const moved = await sbx.files.rename('/home/user/meta.txt', '/home/user/meta2.txt')
    check(moved.metadata?.owner === 'ada', JSON.stringify(moved))
    await sbx.files.write('/home/user/meta2.txt', 'v2')
    check((await sbx.files.getInfo('/home/user/meta2.txt')).metadata === undefined, 'an overwrite clears it')
  })

  await step('signed downloadUrl / uploadUrl, routed by their signature', async () => {
    const url = await sbx.downloadUrl('/home/user/notes/hello.txt', { useSignatureExpiration: 60 })
    check(url.includes('signature=') && !url.includes(sbx.sandboxId), url)
    const got = await fetch(url)
    check(got.status === 200 && (await got.text()) === 'héllo\n', `download ${got.status}`)
    const up = await fetch(await sbx.uploadUrl('/home/user/via-url.txt'), {
      method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: 'via url',
    })
    check(up.status === 200 && (await sbx.files.read('/home/user/via-url.txt')) === 'via url', `upload ${up.status}`)
    const expired = await sbx.downloadUrl('/home/user/notes/hello.txt', { useSignatureExpiration: 1 })
    await sleep(2500)
    const refused = await fetch(expired)
    check(refused.status === 401, `an expired URL is refused: ${refused.status}`)
  })

  await step('paths outside the home', async () => {
    const info = await sbx.files.write('../../../tmp/escape.txt', 'inside')
    check(info.path === '/tmp/escape.txt', info.path)
    await sbx.files.write('/opt/js/app.txt', 'x')
    const owners = (await sbx.commands.run('stat -c %U /opt/js /opt/js/app.txt')).stdout.split('\n')
    check(owners[0] === 'user' && owners[1] === 'user', JSON.stringify(owners))
  })

  await step('errors: missing file, missing directory', async () => {
    await rejects(FileNotFoundError, () => sbx.files.read('/home/user/missing.txt'), 'missing file')
    await rejects(FileNotFoundError, () => sbx.files.list('/home/user/missing-dir'), 'missing dir')
  })

  const limit = uploadLimit()
  if (limit !== null) {
    await step('oversized upload is refused', async () => {
      const e = await rejects(SandboxError, () => sbx.files.write('/tmp/big.bin', new Uint8Array(limit + 1).buffer), 'too large')
      check(e.message.includes('limit'), e.message)
      check((await sbx.files.read('notes/hello.txt')) === 'héllo\n', 'still serving')
    })
  }

  await step('watchDir (streamed, recursive)', async () => {
    await sbx.files.makeDir('/home/user/watched')
    const events = []
    const handle = await sbx.files.watchDir('/home/user/watched', (e) => events.push([e.name, e.type]), { recursive: true })
    await sbx.files.write('/home/user/watched/new.txt', '1')
    await sbx.commands.run('mkdir -p /home/user/watched/d && echo x > /home/user/watched/d/inner.txt')
    const until = Date.now() + 15_000
    const has = (name, type) => events.some(([n, t]) => n === name && t === type)
    while (!has('d/inner.txt', FilesystemEventType.CREATE) && Date.now() < until) await sleep(200)
    await handle.stop()
    check(has('new.txt', FilesystemEventType.CREATE) && has('new.txt', FilesystemEventType.WRITE), JSON.stringify(events))
    check(has('d', FilesystemEventType.CREATE) && has('d/inner.txt', FilesystemEventType.CREATE), JSON.stringify(events))
  })

  await step('watchDir with entries and network mounts allowed (envd 0.6.3, 0.6.4)', async () => {
    await sbx.files.makeDir('/home/user/entries')
    const events = []
    const handle = await sbx.files.watchDir('/home/user/entries', (e) => events.push(e), { includeEntry: true, allowNetworkMounts: true })
    await sbx.files.write('/home/user/entries/e.txt', '12345')
    const until = Date.now() + 15_000
    while (!events.some((e) => e.name === 'e.txt' && e.type === FilesystemEventType.WRITE) && Date.now() < until) await sleep(200)
    await handle.stop()
    const entry = events.filter((e) => e.name === 'e.txt' && e.entry).at(-1)?.entry
    check(entry && entry.path === '/home/user/entries/e.txt' && entry.type === FileType.FILE && entry.size === 5, JSON.stringify(events))
  })
} finally {
  await Sandbox.kill(sbx.sandboxId)
}
