// Git without network: a bare repository in the sandbox is the remote.
import { check, client, expectError, run, sdk } from './common.mjs'

await run('typescript git', async () => {
  const d = client()
  const s = await d.create()
  try {
    const g = s.git
    await g.init('origin.git', true, 'main')
    await g.init('work', false, 'main')
    await s.fs.uploadFile(Buffer.from('v1\n'), 'work/f.txt')
    await g.add('work', ['f.txt'])
    check((await g.status('work')).fileStatus[0].staging === 'Added', 'status')
    const c = await g.commit('work', 'first', 'Ada', 'ada@example.com')
    check(c.sha.length === 40, 'commit', c)
    await g.remoteAdd('work', 'origin', '/home/user/origin.git')
    await g.push('work', undefined, undefined, 'main', 'origin', true)
    await g.clone('file:///home/user/origin.git', 'clone')
    check((await s.fs.downloadFile('clone/f.txt')).toString() === 'v1\n', 'clone')
    await expectError(() => g.clone('file:///home/user/origin.git', 'c2', 'nope'), sdk.DaytonaGitBranchNotFoundError, 'missing branch')
    await g.createBranch('work', 'dev')
    await expectError(() => g.createBranch('work', 'dev'), sdk.DaytonaGitBranchExistsError, 'branch exists')
    await g.checkoutBranch('work', 'dev')
    const b = await g.branches('work')
    check(b.branches.sort().join() === 'dev,main', 'branches', b)
    await g.checkoutBranch('work', 'main')
    await g.deleteBranch('work', 'dev')
    check((await g.branches('work')).branches.join() === 'main', 'delete branch')
    await expectError(() => g.status('/tmp'), sdk.DaytonaGitRepoNotFoundError, 'not a repository')
  } finally {
    await d.delete(s)
  }
})
