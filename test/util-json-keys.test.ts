import t from 'tap'
import { duplicateKey } from '../src/util/json-keys.js'

t.test('finds a key repeated in one object, at any depth, escapes unescaped', async (t) => {
  // The exact input of a finding: this body issued a grant to "b".
  t.equal(duplicateKey('{"subject":"a","subject":"b"}'), 'subject')
  t.equal(duplicateKey('{"a":1,"\\u0061":2}'), 'a', 'one key, two spellings')
  t.equal(duplicateKey('{"x":{"k":1,"k":2}}'), 'k')
  t.equal(duplicateKey('{"x":[{"k":1},{"k":2,"k":3}]}'), 'k')
  t.equal(duplicateKey('{"s":"has \\"quotes\\", commas, {braces}","s":1}'), 's')
})

t.test('accepts the same key in different objects, and values that look like keys', async (t) => {
  t.equal(duplicateKey('{"a":{"a":{"a":1}}}'), undefined)
  t.equal(duplicateKey('{"scopes":["a","a"],"b":"a"}'), undefined, 'array items and values are not keys')
  t.equal(duplicateKey('[{"k":1},{"k":2}]'), undefined)
  t.equal(duplicateKey('{"a":"x\\\\","b":"a"}'), undefined, 'an escaped backslash ends its string')
  t.equal(duplicateKey('{}'), undefined)
  t.equal(duplicateKey('"just a string"'), undefined)
})
