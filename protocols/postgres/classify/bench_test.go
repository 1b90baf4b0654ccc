package classify

import "testing"

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
