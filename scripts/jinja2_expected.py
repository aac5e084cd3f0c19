#!/usr/bin/env python3
"""Prints the Rust table of src/render/jinja2/cases.rs: every case of CASES rendered with
Python Jinja2 configured as protond's Jinja (no autoescape, trailing newline kept, undefined
values that fail when used but are false in `if`). A case Jinja2 refuses is expected to fail.

    python3 scripts/jinja2_expected.py > src/render/jinja2/cases.rs
"""
import jinja2

from jinja2_render import CONTEXT_FOR_CASES as CTX, environment

CASES = [
    # abs, attr
    "{{ n|abs }}", "{{ -3.5|abs }}", "{{ users[0]|attr('name') }}", "{{ dict(a=1)|attr('a') }}",
    "{% set ns = namespace(x=5) %}{{ ns|attr('x') }}", "{{ {'a': 1}|attr('a') }}",
    # batch
    "{% for row in nums|batch(2) %}{{ row|join(',') }};{% endfor %}",
    "{% for row in nums|batch(3, 'x') %}{{ row|join(',') }};{% endfor %}",
    "{% for row in nums|batch(linecount=2, fill_with=0) %}{{ row|join(',') }};{% endfor %}",
    # capitalize, center
    "{{ 'hELLO wORLD'|capitalize }}", "[{{ 'abc'|center(9) }}]", "[{{ 'ab'|center(7) }}]",
    "[{{ 'abc'|center }}]", "[{{ 'abc'|center(width=6) }}]",
    # default
    "{{ missing|default('x') }}", "{{ missing|default('ok')|upper }}", "[{{ ''|default('x') }}]", "{{ ''|default('x', true) }}",
    "{{ none|default('x') }}", "{{ none|default('x', boolean=true) }}", "{{ missing|d('y') }}",
    "{{ 0|d('z', true) }}", "{{ missing.deeper|default('x') }}", "[{{ missing|default }}]",
    # dictsort
    "{% for k, v in d|dictsort %}{{ k }}={{ v }};{% endfor %}",
    "{% for k, v in d|dictsort(true) %}{{ k }}={{ v }};{% endfor %}",
    "{% for k, v in d|dictsort(by='value') %}{{ k }}={{ v }};{% endfor %}",
    "{% for k, v in d|dictsort(reverse=true) %}{{ k }}={{ v }};{% endfor %}",
    "{% for k, v in d|dictsort(false, 'value', true) %}{{ k }}={{ v }};{% endfor %}",
    # escape, forceescape, safe
    "{{ html|escape }}", "{{ html|e }}", "{{ '\"q\" \\'s\\''|e }}", "{{ html|forceescape }}",
    "{{ html|safe|forceescape }}", "{{ html|safe }}", "{{ html|e|e }}",
    # filesizeformat
    "{{ 1000|filesizeformat }}", "{{ 1024|filesizeformat(true) }}", "{{ 123456789|filesizeformat }}",
    "{{ 1|filesizeformat }}", "{{ 1500000|filesizeformat(binary=true) }}", "{{ 0|filesizeformat }}",
    "{{ 2048.5|filesizeformat }}",
    # first, last, float
    "{{ nums|first }}", "{{ 'abc'|first }}", "{{ nums|last }}", "{{ 'abc'|last }}",
    "{{ '3.5'|float }}", "{{ 'x'|float }}", "{{ 'x'|float(1.5) }}", "{{ 3|float }}",
    "{{ '1e3'|float }}", "{{ 'x'|float(default=2) }}", "{{ ' 2.5 '|float }}",
    # format
    "{{ '%s-%d'|format('a', 3) }}", "{{ '%5.2f|%-4s|'|format(f, 'x') }}", "{{ '%(a)s!'|format(a=1) }}",
    "{{ '%x %o %e %%'|format(255, 8, 12345.678) }}", "{{ '%r'|format('a') }}", "{{ '%s'|format(nums) }}",
    "{{ '%03d|%+d|%i'|format(7, 5, 3) }}", "{{ '%s %s'|format(none, true) }}",
    # groupby
    "{% for g in users|groupby('city') %}{{ g.grouper }}:{{ g.list|map(attribute='name')|join(',') }};{% endfor %}",
    "{% for city, items in users|groupby('city') %}{{ city }}={{ items|length }};{% endfor %}",
    "{% for g in users|groupby('city', case_sensitive=true) %}{{ g.grouper }};{% endfor %}",
    "{% for g in users|groupby('zone', default='none') %}{{ g.grouper }}={{ g.list|length }};{% endfor %}",
    "{% for g in users|groupby('age') %}{{ g.grouper }};{% endfor %}",
    # indent
    "{{ 'a\nb\n\nc'|indent }}", "{{ 'a\nb'|indent(2, true) }}", "{{ 'a\n\nb'|indent(2, blank=true) }}",
    "{{ 'a\nb'|indent('> ') }}", "{{ 'a\nb\n'|indent(first=true) }}", "{{ 'a\nb'|indent(width=3) }}",
    # int
    "{{ '42'|int }}", "{{ 'x'|int }}", "{{ 'x'|int(7) }}", "{{ '0x1A'|int(0, 16) }}",
    "{{ '0b101'|int(base=2) }}", "{{ '3.9'|int }}", "{{ 3.9|int }}", "{{ '1_000'|int }}",
    "{{ 'ff'|int(base=16) }}", "{{ ' 12 '|int }}", "{{ '0o17'|int(base=8) }}", "{{ true|int }}",
    # items, join, length, list
    "{% for k, v in d|items %}{{ k }}={{ v }};{% endfor %}", "{{ nums|join }}", "{{ nums|join('-') }}",
    "{{ users|join(', ', attribute='name') }}", "{{ users|join(d='/', attribute='age') }}",
    "{{ nums|length }}", "{{ d|count }}", "{{ 'héllo'|length }}", "{{ 'abc'|list|join('.') }}",
    "{{ d|list|join('.') }}",
    # lower, upper, map
    "{{ 'ÄbC'|lower }}", "{{ 'äbc'|upper }}", "{{ users|map(attribute='name')|join(',') }}",
    "{{ nums|map('string')|join }}", "{{ users|map(attribute='zip', default='?')|join(',') }}",
    "{{ ['1','2']|map('int')|sum }}", "{{ strs|map('upper')|join }}",
    "{{ [[1,2],[3]]|map('join', '+')|join(' ') }}",
    # max, min
    "{{ nums|max }}", "{{ strs|max }}", "{{ strs|max(case_sensitive=true) }}", "{{ strs|min }}",
    "{{ (users|min(attribute='age')).name }}", "{{ (users|max(attribute='city')).name }}",
    "{{ (users|max(attribute='city', case_sensitive=true)).name }}",
    # pprint
    "{{ d|pprint }}", "{{ nums|pprint }}", "{{ 'x'|pprint }}", "{{ users[1]|pprint }}", "{{ none|pprint }}",
    # random
    "{{ [7]|random }}", "{{ 'y' if (nums|random) in nums else 'n' }}",
    # select, reject, selectattr, rejectattr
    "{{ nums|select('odd')|join }}", "{{ nums|reject('odd')|join }}", "{{ nums|select('gt', 2)|join }}",
    "{{ [0,1,'',none,'a']|select|list|length }}", "{{ nums|select('divisibleby', 2)|join }}",
    "{{ [0,1,'',none,'a']|reject|list|length }}",
    "{{ users|selectattr('active')|map(attribute='name')|join }}",
    "{{ users|rejectattr('active')|map(attribute='name')|join }}",
    "{{ users|selectattr('age', 'gt', 28)|map(attribute='name')|join(',') }}",
    "{{ users|selectattr('city', 'equalto', 'Paris')|list|length }}",
    "{{ users|rejectattr('city', 'in', ['Paris'])|map(attribute='name')|join }}",
    # replace, reverse, round
    "{{ 'aaa'|replace('a','b') }}", "{{ 'aaa'|replace('a','b', 2) }}", "{{ 'abc'|replace('', '-') }}",
    "{{ 'aaa'|replace('a','b', count=1) }}",
    "{{ nums|reverse|join }}", "{{ 'abc'|reverse }}", "{{ 2.5|round }}", "{{ 3.5|round }}",
    "{{ 3.14159|round(2) }}", "{{ 3.14159|round(2, 'floor') }}", "{{ 3.14159|round(1, 'ceil') }}",
    "{{ 42|round }}", "{{ 2.675|round(2) }}", "{{ -2.5|round }}", "{{ 1234.5|round(-2) }}",
    "{{ 7|round(1, method='floor') }}",
    # slice
    "{% for col in nums|slice(2) %}{{ col|join(',') }};{% endfor %}",
    "{% for col in nums|slice(3, 0) %}{{ col|join(',') }};{% endfor %}",
    "{% for col in [1,2,3,4,5,6,7]|slice(3) %}{{ col|join(',') }};{% endfor %}",
    # sort
    "{{ nums|sort|join }}", "{{ strs|sort|join }}", "{{ strs|sort(case_sensitive=true)|join }}",
    "{{ strs|sort(true)|join }}", "{{ users|sort(attribute='age')|map(attribute='name')|join(',') }}",
    "{{ users|sort(attribute='city,age')|map(attribute='name')|join(',') }}",
    "{{ users|sort(reverse=true, attribute='name')|map(attribute='name')|join(',') }}",
    # string and printing
    "{{ nums|string }}", "{{ 1e20|string }}", "{{ 0.5|string ~ '!' }}", "{{ f|string }}", "{{ d|string }}", "{{ none|string }}", "{{ true|string }}", "{{ none }}",
    "{{ true }}", "{{ false }}", "{{ nums }}", "{{ d }}", "{{ users[0] }}", "{{ strs }}",
    "{{ 1.0 }}", "{{ 10/4 }}", "{{ 7//2 }}", "{{ 0.1 + 0.2 }}", "{{ [none, true, 1.5, 'it\\'s'] }}",
    "{{ 1 is odd }}", "{{ 1e20 }}", "{{ 2**10 }}", "{{ (1, 'a') }}", "{{ ['a\"b'] }}", "{{ 1 == 1 }}",
    # the language around the filters, as templates use it
    "{% for u in users %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.cycle('a', 'b') }};{% endfor %}",
    "{{ 'a,b'.split(',') }}", "{{ 'ab'.upper() }}",
    "{{ 'abc'.startswith('a') }}", "{{ ' x '.strip() }}", "{{ 'a-b'.replace('-', '_') }}",
    "{{ '{}:{}'.format('a', 1) }}", "{{ '{:>5}|'.format('x') }}", "{{ d.items()|list }}", "{{ d.keys()|list }}",
    "{{ d.values()|list }}", "{{ d.get('a') }}", "{{ d.get('zz', 'dflt') }}", "{{ ', '.join(strs) }}",
    "{{ 'Hello World'.title() }}", "{{ 'x y'.capitalize() }}", "{{ '  a  '|trim ~ '|' }}",
    "{{ 10 / 3 }}", "{{ -7 // 2 }}", "{{ -7 % 3 }}", "{{ 7 / 2 }}", "{{ 1 / 3 }}", "{{ 2 ** 3 ** 2 }}",
    "{{ 1000000 * 1000000 }}", "{{ 'a' + 'b' }}", "{{ [1, 2] + [3] }}", "{{ none ~ 'x' }}", "{{ true ~ '' }}",
    "{{ 1.5 ~ '' }}", "{% filter upper %}x{% endfilter %}", "{{ d|join(', ') }}", "{{ 'abcdef'[1:3] }}",
    "{{ nums[-1] }}", "{{ nums[::2] }}", "{% set a, b = 1, 2 %}{{ a }}{{ b }}", "{{ 'x' in 'xyz' }}",
    "{{ 1 < 2 < 3 }}", "{{ {'a': 1} }}", "{{ ['it\\'s'] }}", "{{ 'abc'|list }}",
    "{%- if true -%}  yes  {%- endif -%}", "{% macro m(x, y=2) %}{{ x }}{{ y }}{% endmacro %}{{ m(1) }}{{ m(1, y=3) }}",
    "{{ users|map(attribute='age')|map('string')|join('|') }}", "{{ nums|length > 0 }}",
    "{{ 'x' * 3 }}", "{{ 3 * 'ab' }}", "{{ nums|first + nums|last }}", "{{ 1 == 1.0 }}",
    "{{ 'ab' ~ 1 ~ none }}", "{{ 0.1 * 3 }}", "{{ 5 // 2 * 2.0 }}", "{{ 2 ** -1 }}", "{{ 10 % 3.5 }}",
    "{% for k in d %}{{ k }}{% endfor %}", "{% for x in [] %}a{% else %}empty{% endfor %}",
    "{{ users[0]['name'] }}", "{{ users[0].name|upper }}", "{{ (nums|sort)[0] }}",
    "{{ 'a\tb'|wordcount }}", "{{ ns }}", "{{ nums|min }}{{ nums|max }}",
    "{{ ['a\\nb', \"it's\", 'q\"x', 'é', '\\\\', 'both\\'\"'] }}",
    "{{ {'k': [1.5, 1e20, none, true], 'é': {'x': 'y'}} }}", "{{ [0.1, -0.0, 1e-7] }}", "{{ (1,) }}", "{{ [(1, 2.5e20)] }}", "{{ users }}",
    # striptags, sum, title, tojson
    "{{ html|striptags }}", "{{ '<a>x</a>   <b>y</b>\n z &lt;'|striptags }}",
    "{{ nums|sum }}", "{{ users|sum(attribute='age') }}", "{{ nums|sum(start=10) }}",
    "{{ [1.5, 2]|sum }}",
    "{{ \"hello wORLD o'neil\"|title }}", "{{ 'foo-bar baz_qux (x)'|title }}",
    "{{ d|tojson }}", "{{ users[0]|tojson }}", "{{ nums|tojson(indent=2) }}", "{{ '<a&\\'>'|tojson }}",
    "{{ {'x': [1, {'y': none}], 'a': 'é'}|tojson(2) }}", "{{ 'x'|tojson }}", "{{ 1.0|tojson }}",
    "{{ [true, none]|tojson }}", "{{ {}|tojson(4) }}", "{{ []|tojson(4) }}",
    # trim, truncate
    "[{{ s|trim }}]", "[{{ 'xxhixx'|trim('x') }}]", "[{{ 'xyhiyx'|trim(chars='xy') }}]",
    "{{ long|truncate(20) }}", "{{ long|truncate(20, true) }}", "{{ long|truncate(20, false, '…', 0) }}",
    "{{ 'short'|truncate(3) }}", "{{ long|truncate(length=30, end='>>') }}",
    "{{ 'abcdefghij'|truncate(8, leeway=0) }}", "{{ 'abcdefghij'|truncate(8, true, leeway=0) }}",
    "{{ long|truncate(12, killwords=false, leeway=0) }}", "{{ 'abc def'|truncate(5, leeway=0) }}",
    # unique
    "{{ strs|unique|join }}", "{{ strs|unique(case_sensitive=true)|join }}",
    "{{ users|unique(attribute='city')|map(attribute='name')|join }}",
    # urlencode, urlize
    "{{ 'a b&c/d?e=f'|urlencode }}", "{{ {'a': 'x y', 'b': 1}|urlencode }}", "{{ 'é~_.-'|urlencode }}",
    "{{ [('k', 'v w'), ('z', 2)]|urlencode }}",
    "{{ 'see https://example.com/x and www.foo.org or a@b.com.'|urlize }}",
    "{{ 'http://example.com/long/path'|urlize(15) }}",
    "{{ 'https://x.org'|urlize(nofollow=true, target='_blank') }}",
    "{{ 'go to <http://x.org>, (https://y.org).'|urlize }}",
    "{{ 'mailto:a@b.org x@y'|urlize(rel='me') }}",
    # wordcount, wordwrap
    "{{ words|wordcount }}", "{{ 'hello-world, foo_bar it\\'s'|wordcount }}",
    "{{ long|wordwrap(20) }}", "{{ 'aaaaaaaaaaaaaaaaaaaaaaaaa bb'|wordwrap(10) }}",
    "{{ 'aaaaaaaaaaaaaaaaaaaaaaaaa bb'|wordwrap(10, false) }}", "{{ long|wordwrap(30, wrapstring='|') }}",
    "{{ 'foo-bar-baz-qux-quux'|wordwrap(8) }}",
    "{{ 'foo-bar-baz-qux-quux'|wordwrap(8, break_on_hyphens=false) }}",
    "{{ 'a b\n\nc d e f'|wordwrap(3) }}", "{{ '  lead  and  gaps  '|wordwrap(9) }}",
    # xmlattr
    "[{{ {'class': 'a b', 'id': 'x<y', 'none': none, 'u': missing}|xmlattr }}]",
    "[{{ {'a': 1}|xmlattr(false) }}]", "[{{ {'a b': 1}|xmlattr }}]",
    # tests
    "{{ 'y' if true is boolean else 'n' }}", "{{ 'y' if 1 is boolean else 'n' }}",
    "{{ 'y' if range is callable else 'n' }}", "{{ 'y' if 'x' is callable else 'n' }}",
    "{{ 'y' if missing is defined else 'n' }}", "{{ 'y' if nums is defined else 'n' }}",
    "{{ 'y' if 9 is divisibleby(3) else 'n' }}", "{{ 'y' if 9 is divisibleby 4 else 'n' }}",
    "{{ 'y' if 1 is eq 1 else 'n' }}", "{{ 'y' if 1 is equalto(2) else 'n' }}",
    "{{ 'y' if html|e is escaped else 'n' }}", "{{ 'y' if html is escaped else 'n' }}",
    "{{ 'y' if 2 is even else 'n' }}", "{{ 'y' if false is false else 'n' }}", "{{ 'y' if 0 is false else 'n' }}",
    "{{ 'y' if 'upper' is filter else 'n' }}", "{{ 'y' if 'nope' is filter else 'n' }}",
    "{{ 'y' if 1.0 is float else 'n' }}", "{{ 'y' if 1 is float else 'n' }}",
    "{{ 'y' if 3 is ge 3 else 'n' }}", "{{ 'y' if 3 is gt 3 else 'n' }}", "{{ 'y' if 4 is greaterthan 3 else 'n' }}",
    "{{ 'y' if 2 is in nums else 'n' }}", "{{ 'y' if 'a' is in 'cat' else 'n' }}",
    "{{ 'y' if 1 is integer else 'n' }}", "{{ 'y' if 1.0 is integer else 'n' }}", "{{ 'y' if true is integer else 'n' }}",
    "{{ 'y' if nums is iterable else 'n' }}", "{{ 'y' if 'x' is iterable else 'n' }}", "{{ 'y' if 1 is iterable else 'n' }}",
    "{{ 'y' if 2 is le 3 else 'n' }}", "{{ 'y' if 'abc' is lower else 'n' }}", "{{ 'y' if 'aBc' is lower else 'n' }}",
    "{{ 'y' if 2 is lt 3 else 'n' }}", "{{ 'y' if 2 is lessthan 1 else 'n' }}",
    "{{ 'y' if d is mapping else 'n' }}", "{{ 'y' if nums is mapping else 'n' }}",
    "{{ 'y' if 1 is ne 2 else 'n' }}", "{{ 'y' if none is none else 'n' }}", "{{ 'y' if 0 is none else 'n' }}",
    "{{ 'y' if 1.5 is number else 'n' }}", "{{ 'y' if true is number else 'n' }}", "{{ 'y' if '1' is number else 'n' }}",
    "{{ 'y' if 3 is odd else 'n' }}", "{{ 'y' if none is sameas none else 'n' }}", "{{ 'y' if 1 is sameas true else 'n' }}",
    "{{ 'y' if nums is sequence else 'n' }}", "{{ 'y' if 'x' is sequence else 'n' }}", "{{ 'y' if d is sequence else 'n' }}",
    "{{ 'y' if 1 is sequence else 'n' }}",
    "{{ 'y' if 'x' is string else 'n' }}", "{{ 'y' if 1 is string else 'n' }}",
    "{{ 'y' if 'odd' is test else 'n' }}", "{{ 'y' if 'nope' is test else 'n' }}",
    "{{ 'y' if true is true else 'n' }}", "{{ 'y' if 1 is true else 'n' }}",
    "{{ 'y' if missing is undefined else 'n' }}", "{{ 'y' if 'ABC' is upper else 'n' }}",
    "{{ 'y' if missing else 'n' }}", "{{ 'y' if missing is not defined else 'n' }}",
    "{% if missing == 'x' %}a{% else %}b{% endif %}", "{{ missing is none }}",
    "{% for x in missing %}{% endfor %}ok", "{{ missing.attr is defined }}",
    "{{ 'a' if missing and true else 'b' }}", "{{ not missing }}", "{{ missing in nums }}",
    "{{ missing ~ 'x' }}", "{{ missing + 1 }}", "{{ 'y' if missing != 1 else 'n' }}",
    # globals
    "{{ range(3)|join(',') }}", "{{ range(1, 10, 3)|join(',') }}", "{{ range(5, 0, -2)|join(',') }}",
    "{% for k, v in dict(b=1, a=2)|dictsort %}{{ k }}{{ v }}{% endfor %}",
    "{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }}{{ c.next() }}{{ c.current }}",
    "{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.reset() }}{{ c.next() }}",
    "{% set j = joiner('|') %}{% for x in nums %}{{ j() }}{{ x }}{% endfor %}",
    "{% set j = joiner() %}{% for x in [1,2] %}{{ j() }}{{ x }}{% endfor %}",
    "{% set ns = namespace(x=1) %}{% for i in nums %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}",
    "{% set ns = namespace(d, y=2) %}{{ ns.a }}{{ ns.y }}",
    "{{ 'y' if lipsum(2)|wordcount > 10 else 'n' }}", "{{ lipsum(1, false)|length > 20 }}",
    "{{ lipsum(1, false, 5, 5).split()|length }}",
]

# A filter applied to an undefined value fails like any other use of it (the rule;
# Jinja2's StrictUndefined lets a few lazy filters, `items` and `pprint` through).
UNDEFINED_CASES = [
    "{{ missing }}", "{{ missing|tojson }}", "{{ missing|length }}", "{{ missing|upper }}",
    "{{ missing|list }}", "{{ missing|string }}", "{{ missing|pprint }}", "{{ missing|first }}",
    "{{ missing|join(',') }}", "{{ missing|int }}", "{{ missing|trim }}", "{{ missing|truncate(3) }}",
    "{{ missing|wordcount }}", "{{ missing|abs }}", "{{ missing|sort }}", "{{ missing|unique }}",
    "{{ missing|dictsort }}", "{{ missing|items }}", "{{ missing|batch(2) }}", "{{ missing|center(3) }}",
    "{{ missing|indent }}", "{{ missing|escape }}", "{{ missing|safe }}", "{{ missing|title }}",
    "{{ missing|urlencode }}", "{{ missing|xmlattr }}", "{{ missing|reverse }}", "{{ missing|float }}",
    "{{ missing|round }}", "{{ missing|capitalize }}", "{{ missing|filesizeformat }}", "{{ missing|sum }}",
    "{% set x = missing|tojson %}done", "{{ d.missing|tojson }}",
    "{{ missing|map('upper')|list }}", "{{ missing|select|list }}", "{{ missing|replace('a','b') }}",
    "{{ missing|lower }}", "{{ missing|format }}", "{{ missing|striptags }}", "{{ missing|wordwrap }}",
    "{{ missing|forceescape }}", "{{ missing|last }}", "{{ missing|min }}", "{{ missing|max }}",
    "{{ missing|random }}", "{{ missing|slice(2) }}", "{{ missing|groupby('a') }}", "{{ missing|urlize }}",
    "{{ missing|selectattr('a') }}", "{{ missing|attr('a') }}", "{{ missing|count }}",
]


# Jinja2 renders these; protond refuses them with an error naming the file and line (never
# a different output): Python's `%` operator on strings (use the `format` filter).
REFUSED_CASES = ["{{ '%s-%s' % ('a', 1) }}", "{{ '%d items' % 3 }}"]


def rust_str(s):
    out = []
    for c in s:
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def main():
    env = environment()
    print("//! @generated by `scripts/jinja2_expected.py` from Python Jinja2 " + jinja2.__version__ + ": do not edit.")
    print("//! Each case: a template and what Jinja2 renders it to (None: Jinja2 refuses it).")
    print()
    print("/// Templates and Jinja2's output for them.")
    print("pub const CASES: &[(&str, Option<&str>)] = &[")
    for case in UNDEFINED_CASES + REFUSED_CASES:
        print(f"    ({rust_str(case)}, None),")
    for case in CASES:
        try:
            out = env.from_string(case).render(CTX)
            expected = "Some(" + rust_str(out) + ")"
        except Exception:  # noqa: BLE001 - any refusal is an expected failure
            expected = "None"
        print(f"    ({rust_str(case)}, {expected}),")
    print("];")


if __name__ == "__main__":
    main()
