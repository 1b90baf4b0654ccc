package classify

import (
	"strconv"
	"testing"
)

var benchQueries = map[string]string{
	"simple": "select * from t where id = $1",
	"join": `with recent as (select * from orders where created > now() - interval '1 day')
		select c.name, count(*), sum(r.total) over (partition by c.region)
		from customers c join recent r on r.customer_id = c.id
		where c.active and r.status in ('paid', 'shipped') group by c.name, c.region, r.total
		order by 2 desc limit 50`,
	"insert": "insert into events (kind, payload, at) values ($1, $2, now()) on conflict (id) do update set payload = excluded.payload",
}

// BenchmarkClassify compares parsing every time with hitting the cache.
func BenchmarkClassify(b *testing.B) {
	for name, sql := range benchQueries {
		b.Run("cold/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if r := Classify(sql); r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		})
		b.Run("cached/"+name, func(b *testing.B) {
			c := New(1024)
			c.Classify(sql)
			b.ReportAllocs()
			for b.Loop() {
				if r := c.Classify(sql); r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		})
	}
}

// BenchmarkClassifyShape: a query repeated with a new constant each time
// (pgbench -S in simple protocol) misses the exact cache and hits the
// shape cache.
func BenchmarkClassifyShape(b *testing.B) {
	texts := make([]string, 4096)
	for i := range texts {
		texts[i] = "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(i*7919) + ";"
	}
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			Classify(texts[i%len(texts)])
			i++
		}
	})
	b.Run("shape", func(b *testing.B) {
		c := New(1024) // smaller than the texts: exact hits are rare
		c.Classify(texts[0])
		b.ReportAllocs()
		i := 1
		for b.Loop() {
			if r := c.Classify(texts[i%len(texts)]); r.Class() != Read {
				b.Fatal(r.Class())
			}
			i++
		}
	})
}
