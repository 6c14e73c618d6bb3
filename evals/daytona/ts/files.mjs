// Files: uploadFiles (interleaved multipart), uploadFile, streams, downloadFile(s) (busboy),
// list, details, folder, move, permissions, find, search, replace, delete, errors.
import { Readable } from 'node:stream'
import { check, client, expectError, run, sdk } from './common.mjs'

await run('typescript files', async () => {
  const d = client()
  const s = await d.create()
  try {
    const fs = s.fs
    const bin = Buffer.alloc(1 << 20, 0).map((_, i) => i % 256)
    await fs.uploadFiles([
      { source: Buffer.from('hello\n'), destination: 'docs/a.txt' },
      { source: bin, destination: '/tmp/bin.dat' },
      { source: Buffer.from('ü\n'), destination: 'docs/ünï.txt' },
    ])
    check((await fs.downloadFile('docs/a.txt')).toString() === 'hello\n', 'download')
    check((await fs.downloadFile('/tmp/bin.dat')).equals(bin), 'binary round trip')
    check((await fs.downloadFile('docs/ünï.txt')).toString() === 'ü\n', 'non-ASCII path')
    const res = await fs.downloadFiles([{ source: 'docs/a.txt' }, { source: 'docs/none' }])
    check(res[0].result.toString() === 'hello\n' && !res[0].error, 'bulk ok part', res[0])
    check(res[1].error && !res[1].result, 'bulk error part', res[1])
    await expectError(() => fs.downloadFile('docs/none'), sdk.DaytonaError, 'missing file')
    await fs.uploadFileStream(Readable.from([Buffer.from('str'), Buffer.from('eam\n')]), 'docs/s.txt')
    check((await fs.downloadFile('docs/s.txt')).toString() === 'stream\n', 'upload stream')
    const chunks = []
    for await (const c of await fs.downloadFileStream('/tmp/bin.dat')) chunks.push(c)
    check(Buffer.concat(chunks).equals(bin), 'download stream')

    const names = (await fs.listFiles('docs')).map((f) => f.name).sort()
    check(JSON.stringify(names) === JSON.stringify(['a.txt', 's.txt', 'ünï.txt']), 'list', names)
    const info = await fs.getFileDetails('docs/a.txt')
    check(!info.isDir && info.size === 6, 'details', info)
    await fs.createFolder('docs/sub', '755')
    await fs.moveFiles('docs/a.txt', 'docs/sub/b.txt')
    await fs.setFilePermissions('docs/sub/b.txt', { mode: '640' })
    check((await fs.getFileDetails('docs/sub/b.txt')).permissions === '0640', 'permissions')
    const m = await fs.findFiles('docs', 'hello')
    check(m.length === 1 && m[0].line === 1 && m[0].content === 'hello', 'find', m)
    check((await fs.searchFiles('docs', '*.txt')).files.length === 3, 'search')
    const rr = await fs.replaceInFiles(['docs/sub/b.txt'], 'hello', 'bye')
    check(rr[0].success && (await fs.downloadFile('docs/sub/b.txt')).toString() === 'bye\n', 'replace', rr)
    await expectError(() => fs.uploadFile(Buffer.from('x'), '/proc/nope/x'), sdk.DaytonaError, 'read-only upload')
    await fs.deleteFile('docs', true)
    await expectError(() => fs.getFileDetails('docs'), sdk.DaytonaNotFoundError, 'deleted')
  } finally {
    await d.delete(s)
  }
})
