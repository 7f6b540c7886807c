{#- Weekly cases and deaths per IDSR disease and org unit, at every level of the hierarchy,
    one row per disease, org unit and ISO week from the first to the last week IDSR data
    exist for: zero when facilities reported without cases (DHIS2 stores no zeros), null when
    no facility below the org unit reported that week. With the population of the week's year
    and the week's IDSR reporting completeness, so alerting can tell a quiet week from a week
    nobody reported. lab_confirmed counts laboratory orders whose confirmatory test was
    positive (seed idsr_lab_confirmations), by week of specimen collection. -#}
{{ config(materialized='table') }}

with diseases as (

    select * from {{ ref('idsr_diseases') }}

),

disease_elements as (

    select disease, cases_data_element_id as data_element_id, 'cases' as measure from diseases
    union all
    select disease, deaths_data_element_id as data_element_id, 'deaths' as measure from diseases

),

idsr_data_sets as (

    select distinct v.data_set_id
    from {{ ref('int_data_values_unified') }} as v
    join disease_elements as e on e.data_element_id = v.data_element_id
    where v.data_set_id is not null and not v.is_derived

),

weekly as (

    select a.data_element_id, a.org_unit_id, a.org_unit_level, a.period_id, sum(a.value) as value
    from {{ ref('int_data_values_aggregated') }} as a
    where a.period_type = 'Weekly'
    group by a.data_element_id, a.org_unit_id, a.org_unit_level, a.period_id

),

counts as (

    select
        e.disease,
        w.org_unit_id,
        w.period_id,
        sum(case when e.measure = 'cases' then w.value end) as cases,
        sum(case when e.measure = 'deaths' then w.value end) as deaths
    from weekly as w
    join disease_elements as e on e.data_element_id = w.data_element_id
    group by e.disease, w.org_unit_id, w.period_id

),

reports as (

    select
        w.org_unit_id,
        w.period_id,
        sum(case when w.data_element_id = 'R:' || ds.data_set_id || ':ACTUAL_REPORTS' then w.value end)
            as received,
        sum(case when w.data_element_id = 'R:' || ds.data_set_id || ':EXPECTED_REPORTS' then w.value end)
            as expected
    from weekly as w
    join idsr_data_sets as ds
        on w.data_element_id in (
            'R:' || ds.data_set_id || ':ACTUAL_REPORTS', 'R:' || ds.data_set_id || ':EXPECTED_REPORTS'
        )
    group by w.org_unit_id, w.period_id

),

reported as (

    -- when the week's figures reached the warehouse's source: the alert's detection time
    -- cannot be earlier than that
    select e.disease, a.ancestor_id as org_unit_id, v.period_id, max(v.source_updated_at) as last_reported_at
    from {{ ref('int_data_values_unified') }} as v
    join disease_elements as e on e.data_element_id = v.data_element_id
    join {{ ref('int_org_unit_ancestors') }} as a on a.org_unit_id = v.org_unit_id
    where v.period_type = 'Weekly'
    group by e.disease, a.ancestor_id, v.period_id

),

week_bounds as (

    select min(p.start_date) as first_start, max(p.start_date) as last_start
    from counts as c
    join {{ ref('int_periods') }} as p on p.period_id = c.period_id

),

weeks as (

    select p.period_id, p.start_date, p.end_date
    from {{ ref('int_periods') }} as p
    cross join week_bounds as b
    where p.period_type = 'Weekly' and p.start_date between b.first_start and b.last_start

),

lab_confirmed as (

    -- one order is one confirmed case, whatever else it tested; latest result only (staging
    -- keeps the corrected one)
    select
        c.disease,
        a.ancestor_id as org_unit_id,
        d.weekly_id as period_id,
        count(distinct r.source_name || '|' || r.order_key) as lab_confirmed
    from {{ ref('stg_hl7v2__results') }} as r
    join {{ ref('idsr_lab_confirmations') }} as c
        on c.test_code = r.test_code and c.positive_code = r.value_code
    join {{ ref('int_org_units') }} as o on o.code = r.org_unit_code
    join {{ ref('int_org_unit_ancestors') }} as a on a.org_unit_id = o.org_unit_id
    join {{ ref('int_calendar_days') }} as d on d.day = cast(r.collected_at as date)
    where not r.is_specimen_rejected
    group by c.disease, a.ancestor_id, d.weekly_id

),

population as (

    select a.org_unit_id, a.period_id as year_id, sum(a.value) as population
    from {{ ref('int_data_values_aggregated') }} as a
    join {{ ref('reference_data_elements') }} as r
        on r.data_element_id = a.data_element_id and r.role = 'population_total'
    where a.period_type = 'Yearly'
    group by a.org_unit_id, a.period_id

),

grid as (

    select d.disease, d.disease_name, d.is_immediately_notifiable, o.org_unit_id, o.level, w.*
    from diseases as d
    cross join {{ ref('int_org_units') }} as o
    cross join weeks as w

)

select
    g.disease,
    g.disease_name,
    g.org_unit_id,
    g.level as org_unit_level,
    g.period_id,
    g.start_date as week_start_date,
    g.end_date as week_end_date,
    case when c.cases is not null or coalesce(r.received, 0) > 0 then coalesce(c.cases, 0) end
        as cases,
    case when c.deaths is not null or coalesce(r.received, 0) > 0 then coalesce(c.deaths, 0) end
        as deaths,
    pop.population,
    case
        when pop.population > 0 and (c.cases is not null or coalesce(r.received, 0) > 0)
        then coalesce(c.cases, 0) * 100000.0 / pop.population
    end as cases_per_100k,
    r.received as reports_received,
    r.expected as reports_expected,
    case when r.expected > 0 then coalesce(r.received, 0) * 100.0 / r.expected end
        as reporting_completeness,
    g.is_immediately_notifiable,
    coalesce(lab.lab_confirmed, 0) as lab_confirmed,
    rep.last_reported_at
from grid as g
left join counts as c
    on c.disease = g.disease and c.org_unit_id = g.org_unit_id and c.period_id = g.period_id
left join reports as r on r.org_unit_id = g.org_unit_id and r.period_id = g.period_id
left join reported as rep
    on rep.disease = g.disease and rep.org_unit_id = g.org_unit_id and rep.period_id = g.period_id
left join lab_confirmed as lab
    on lab.disease = g.disease and lab.org_unit_id = g.org_unit_id and lab.period_id = g.period_id
left join population as pop
    on pop.org_unit_id = g.org_unit_id
    and pop.year_id = cast(cast(extract(year from g.start_date + 3) as integer) as {{ hp_type_text() }})
